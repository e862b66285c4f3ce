"""The runner against a real local Ray cluster: dispatch, driver failures, orphans, timeouts,
and an owned head that takes every process of its jobs down with it."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from rlvr.config import JobSpec
from rlvr.jobs.runner import (
    JobRunner,
    RayUnavailableError,
    _job_client_class,
    head_processes,
    job_needs,
)
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


def test_a_job_ray_never_heard_of_is_marked_an_orphan_without_auto_resume(store, runner):
    runner.auto_resume = False
    job = store.create_job(JobSpec(name="ghost"), run_dir="/tmp/ghost")
    store.set_dispatch(job.id, submission_id=f"{job.id}-gone", ray_status="RUNNING")
    store.set_status(job.id, "running")
    runner.tick()
    after = store.get_job(job.id)
    assert after.status == "failed" and after.error.startswith("orphaned")
    assert after.ray_status == "MISSING"


def test_a_job_ray_lost_is_queued_to_resume_from_its_checkpoint(store, ray_head):
    runner = JobRunner(
        store, db_url=store.url, ray_address=ray_head.address, ray_token=ray_head.token,
        dispatch_timeout_s=0.0,
    )  # fmt: skip
    assert runner.auto_resume  # the default
    job = store.create_job(JobSpec(name="lost", model={"path": "/nonexistent"}), run_dir="/x")
    store.set_dispatch(job.id, submission_id=f"{job.id}-gone", ray_status="RUNNING")
    store.set_status(job.id, "running", step=7)
    runner._reconcile(runner.client(), store.get_job(job.id), None)  # Ray has no such job
    after = store.get_job(job.id)
    assert (after.status, after.attempt, after.resume, after.step) == ("queued", 2, True, 7)
    assert after.submission_id is None and after.error is None


def test_auto_resume_is_on_unless_rlvr_auto_resume_is_0(store, monkeypatch):
    monkeypatch.setenv("RLVR_AUTO_RESUME", "0")
    assert not JobRunner(store, db_url=store.url, ray_address="http://127.0.0.1:1").auto_resume
    monkeypatch.setenv("RLVR_AUTO_RESUME", "1")
    assert JobRunner(store, db_url=store.url, ray_address="http://127.0.0.1:1").auto_resume


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
def test_an_owned_head_takes_every_process_of_its_jobs_down_when_killed_or_stopped(
    store, tiny_spec, tmp_path, processes_mentioning
):
    """The runner owns a head. kill -9 of the head: the runner notices, ends every process
    of that head and its job (the driver runs in a session of its own, so the whole process
    table is searched) and queues the job to resume on a new head. Stopping the runner then
    leaves no process of any head or of the job behind either."""
    runner = JobRunner(
        store, db_url=store.url, driver_python=sys.executable, poll_s=0.5, stop_grace_s=10,
        local_head={"num_cpus": 2, "object_store_mb": 256},
    )  # fmt: skip
    spec = JobSpec.model_validate(tiny_spec(name="owned", max_steps=2000, every=1000))
    job = store.create_job(spec, run_dir=str(tmp_path / "run"))
    runner.start()
    try:
        try:  # the head starts on first need; Ray runs the driver
            wait_for(lambda: store.get_job(job.id).step >= 1, 180, "the driver's first step")
        except AssertionError:
            raise AssertionError(f"{store.get_job(job.id)}\n{runner.state()}") from None
        state = runner.state()
        assert state.owned and state.connected and state.address.startswith("http://127.0.0.1:")
        head, mark = runner._head._proc.pid, runner._head.mark
        drivers = [
            p for p in processes_mentioning(job.id) if "rlvr.jobs.driver" in " ".join(p.cmdline())
        ]
        assert drivers and all(os.getsid(p.pid) != os.getsid(head) for p in drivers)
        assert {p.pid for p in drivers} <= {p.pid for p in head_processes(mark)}

        os.kill(head, signal.SIGKILL)
        wait_for(lambda: not head_processes(mark), 90, "the runner to end the head's processes")
        assert not [p for p in drivers if p.is_running() and p.status() != "zombie"]
        requeued = store.get_job(job.id)
        assert requeued.attempt == 2 and requeued.resume and requeued.error is None
        assert requeued.status in ("queued", "running")  # on the next head, already maybe
    finally:
        marks = [mark, runner._head.mark if runner._head else None]  # the next head's too
        runner.stop()
    assert runner._head is None
    assert processes_mentioning(job.id, store.url, *filter(None, marks)) == []  # none, anywhere
    after = store.get_job(job.id)
    assert after.status == "queued" and after.resume  # resumes when a runner is back


def test_a_jobs_needs_grow_with_its_replicas_learners_and_reward_workers():
    from rlvr.plan import cluster_from_args

    small = job_needs(JobSpec())
    big = job_needs(JobSpec(rollout={"replicas": 3}, algorithm={"num_learners": 2},
                            reward={"workers": 8}))  # fmt: skip
    assert small["GPU"] == big["GPU"] == 0  # no cluster, or a CPU one: no GPUs
    assert big["CPU"] - small["CPU"] == 2 + 2 + 0.5 * (8 - 2)
    assert big["memory"] > small["memory"] >= 2 * 2**30  # driver + one replica
    on_gpus = job_needs(JobSpec(rollout={"engine": "vllm", "replicas": 2}), cluster_from_args(8))
    assert on_gpus["GPU"] >= 2  # the placement plan's GPUs: one per engine at least


def test_queued_jobs_are_admitted_by_priority_then_age_while_they_fit(store, ray_head):
    """On the 2-CPU head one job takes the whole cluster (its needs, capped at the cluster's
    size): the higher-priority job goes first, the others wait in order and are admitted
    as resources come free. Jobs that fail at once (no model) keep the head idle."""
    runner = JobRunner(store, db_url=store.url, ray_address=ray_head.address,
                       ray_token=ray_head.token, driver_python=sys.executable)  # fmt: skip
    client = runner.client()
    total, _ = wait_for(lambda: runner._capacity(client), 60, "the head's resources")
    assert total["CPU"] == 2 and total["GPU"] == 0 and total["memory"] > 0
    spec = JobSpec(name="q", model={"path": "/nonexistent"}, reward={"workers": 1})
    old, new = (store.create_job(spec, run_dir="/tmp/q").id for _ in range(2))
    urgent = store.create_job(spec, run_dir="/tmp/q", priority=5).id
    assert store.queue_positions() == {urgent: 1, old: 2, new: 3}

    def admitted(job_id: str):  # a fresh head's job agent may ask to try again
        runner._admit(client)
        return store.get_job(job_id).submission_id

    assert wait_for(lambda: admitted(urgent), 60, "admission") == urgent  # though the newest
    assert store.get_job(old).submission_id is None  # waits: the cluster is taken
    assert store.queue_positions() == {old: 1, new: 2}

    store.set_status(urgent, "failed", error="done")  # its Ray job ends: resources free
    store.set_dispatch(urgent, ray_status="FAILED")
    assert wait_for(lambda: admitted(old), 60, "admission") == old
    assert store.queue_positions() == {new: 1}  # FIFO within a priority
    runner._admit(client)
    assert store.get_job(new).submission_id is None
