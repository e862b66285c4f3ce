"""The runner against a real local Ray cluster: dispatch, driver failures, orphans, timeouts."""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from rlvr.config import JobSpec
from rlvr.jobs.runner import JobRunner, RayUnavailableError, _job_client_class, live_group_members
from rlvr.jobs.store import JobStore


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return JobStore(f"sqlite:///{tmp_path / 'rlvr.db'}")


@pytest.fixture
def runner(store, ray_head):
    r = JobRunner(
        store, db_url=store.url, ray_address=ray_head.address, ray_token=ray_head.token,
        driver_python=sys.executable, poll_s=0.5,
    )  # fmt: skip
    yield r
    r.stop()


def test_the_jobs_api_refuses_a_client_without_the_token(ray_head):
    with pytest.raises(Exception, match="(?i)auth"):
        _job_client_class()(ray_head.address, timeout_s=10, headers={})
    ok = _job_client_class()(
        ray_head.address, timeout_s=10, headers={"Authorization": f"Bearer {ray_head.token}"}
    )
    assert isinstance(ok.list_jobs(), list)
    assert ray_head.address.startswith("http://127.0.0.1:")  # the Jobs API on loopback only


def test_a_failing_driver_is_recorded_with_its_error(store, runner, tmp_path):
    # Past the API's validation (which would refuse it): the model does not exist.
    spec = JobSpec(name="broken", model={"path": str(tmp_path / "no-such-model")})
    job = store.create_job(spec, run_dir=str(tmp_path / "run"))
    runner.start()
    done = wait_for(lambda: (j := store.get_job(job.id)).terminal and j, 120, "the job to fail")
    assert done.status == "failed"
    assert done.submission_id == job.id  # one Ray job per training job, same id
    assert "no-such-model" in done.error  # the exception, as the trainer reported it
    wait_for(lambda: store.get_job(job.id).ray_status == "FAILED", 30, "Ray to report FAILED")
    logs = runner.logs(store.get_job(job.id))
    assert "broken" in logs or "Traceback" in logs


def test_a_job_ray_never_heard_of_is_marked_an_orphan(store, runner):
    job = store.create_job(JobSpec(name="ghost"), run_dir="/tmp/ghost")
    store.set_dispatch(job.id, submission_id=f"{job.id}-gone", ray_status="RUNNING")
    store.set_status(job.id, "running")
    runner.tick()
    after = store.get_job(job.id)
    assert after.status == "failed" and after.error.startswith("orphaned")
    assert after.ray_status == "MISSING"


def test_an_unresponsive_cluster_times_out_and_fails_queued_jobs(store, tmp_path):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections, never answers
    address = f"http://127.0.0.1:{silent.getsockname()[1]}"
    runner = JobRunner(store, db_url=store.url, ray_address=address, http_timeout_s=1.0,
                       dispatch_timeout_s=0.0)  # fmt: skip
    job = store.create_job(JobSpec(name="stuck"), run_dir=str(tmp_path / "run"))
    finished = threading.Event()

    def tick():
        runner.tick()
        finished.set()

    threading.Thread(target=tick, daemon=True).start()
    assert finished.wait(30), "a Ray call without a timeout hung"
    after = store.get_job(job.id)
    assert after.status == "failed" and "could not submit to Ray" in after.error
    with pytest.raises(RayUnavailableError):
        runner.client()
    silent.close()


def test_a_cancelled_driver_that_does_not_stop_in_time_is_stopped_by_ray(
    store, ray_head, tiny_spec, tmp_path
):
    runner = JobRunner(
        store, db_url=store.url, ray_address=ray_head.address, ray_token=ray_head.token,
        driver_python=sys.executable, poll_s=0.5, stop_grace_s=0.0,  # no grace: stop_job now
    )  # fmt: skip
    spec = JobSpec.model_validate(tiny_spec(name="stubborn", max_steps=2000, every=1000))
    job = store.create_job(spec, run_dir=str(tmp_path / "run"))
    runner.start()
    try:
        wait_for(lambda: store.get_job(job.id).step >= 1, 120, "the first step")
        store.set_status(job.id, "cancelled", error="cancelled by request")
        wait_for(lambda: store.get_job(job.id).ray_status == "STOPPED", 60, "Ray's STOPPED")
        assert store.get_job(job.id).status == "cancelled"
    finally:
        runner.stop()


@pytest.mark.slow
def test_without_an_address_the_runner_owns_a_head_and_takes_it_down_on_stop(
    store, tiny_spec, tmp_path
):
    runner = JobRunner(
        store, db_url=store.url, driver_python=sys.executable, poll_s=0.5,
        local_head={"num_cpus": 2, "object_store_mb": 256},
    )  # fmt: skip
    spec = JobSpec.model_validate(tiny_spec(name="owned", max_steps=2000, every=1000))
    job = store.create_job(spec, run_dir=str(tmp_path / "run"))
    runner.start()
    try:
        try:  # the head starts on first need; Ray runs the driver
            wait_for(lambda: store.get_job(job.id).ray_status == "RUNNING", 180, "the driver")
        except AssertionError:
            raise AssertionError(f"{store.get_job(job.id)}\n{runner.state()}") from None
        state = runner.state()
        assert state.owned and state.connected and state.address.startswith("http://127.0.0.1:")
        head_pid = runner._head._proc.pid
    finally:
        runner.stop()
    after = store.get_job(job.id)
    assert after.status == "failed" and "the service stopped" in after.error
    assert live_group_members(head_pid) == []  # the head's whole process group is gone
