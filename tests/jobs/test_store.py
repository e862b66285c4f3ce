"""The job store on a real SQLite file: upserts, sticky statuses, events, schema versions."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest
from sqlalchemy import text

from rlvr.config import JobSpec
from rlvr.jobs.store import SCHEMA_VERSION, JobStore, SchemaVersionError


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return JobStore(f"sqlite:///{tmp_path / 'rlvr.db'}")


def new_job(store: JobStore, name: str = "t") -> str:
    return store.create_job(JobSpec(name=name), run_dir="/tmp/run").id


def test_sqlite_file_is_created_in_wal_mode_with_its_directory(tmp_path):
    store = JobStore(f"sqlite:///{tmp_path / 'deep' / 'dir' / 'rlvr.db'}")
    assert (tmp_path / "deep" / "dir" / "rlvr.db").is_file()
    with store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_replayed_steps_are_stored_once(store):
    job = new_job(store)
    for _ in range(3):
        store.record_metrics(job, 1, {"reward/mean": 0.5, "loss": 2.0})
    store.record_metrics(job, 1, {"reward/mean": 0.7})
    series = store.metric_series(job)
    assert series == {"loss": [(1, 2.0)], "reward/mean": [(1, 0.7)]}


def test_non_finite_values_become_gaps_and_non_numbers_are_dropped(store):
    job = new_job(store)
    store.record_metrics(job, 1, {"kl": float("nan"), "loss": float("inf"), "note": "x", "ok": 1})
    assert store.metric_series(job) == {"kl": [(1, None)], "loss": [(1, None)], "ok": [(1, 1.0)]}


def test_truncate_after_drops_later_steps_for_a_resume(store):
    job = new_job(store)
    for step in range(1, 6):
        store.record_metrics(job, step, {"reward/mean": step / 10})
        store.record_samples(job, step, [{"prompt": "p", "reward": 0.0}])
    store.truncate_after(job, 3)
    assert [s for s, _ in store.metric_series(job)["reward/mean"]] == [1, 2, 3]
    assert {r["step"] for r in store.samples(job, limit=100)} == {1, 2, 3}
    assert store.get_job(job).step == 3
    assert store.events_after(job)[-1].kind == "truncate"


def test_latest_metrics_takes_each_metric_at_its_own_newest_step(store):
    job = new_job(store)
    store.record_metrics(job, 0, {"eval/accuracy": 0.4})
    store.record_metrics(job, 1, {"reward/mean": 0.1})
    store.record_metrics(job, 2, {"reward/mean": 0.2})
    assert store.latest_metrics(job) == {"eval/accuracy": 0.4, "reward/mean": 0.2}


def test_terminal_status_is_sticky_until_reopened(store):
    job = new_job(store)
    assert store.set_status(job, "running")
    assert store.set_status(job, "cancelled", error="by request")
    assert not store.set_status(job, "succeeded")
    assert not store.set_status(job, "running")
    assert store.get_job(job).status == "cancelled"
    reopened = store.reopen(job)
    assert (reopened.status, reopened.attempt, reopened.resume) == ("queued", 2, True)
    assert not store.set_status(job, "failed", attempt=1)  # the old attempt's driver
    assert store.set_status(job, "running", attempt=2)


def test_reopen_refuses_running_jobs(store):
    job = new_job(store)
    store.set_status(job, "running")
    with pytest.raises(ValueError, match="only failed or cancelled"):
        store.reopen(job)


def test_events_are_an_ordered_cursor(store):
    job = new_job(store)
    store.set_status(job, "running")
    store.record_metrics(job, 1, {"reward/mean": 0.1})
    store.record_checkpoint(job, 1, "/ckpt/step_1")
    events = store.events_after(job)
    assert [e.kind for e in events] == ["status", "status", "metrics", "checkpoint"]
    assert [e.kind for e in store.events_after(job, events[1].id)] == ["metrics", "checkpoint"]
    assert store.last_event_id(job) == events[-1].id


def test_samples_of_a_replayed_step_replace_the_old_ones(store):
    job = new_job(store)
    store.record_samples(job, 2, [{"prompt": "a"}, {"prompt": "b"}, {"prompt": "c"}])
    store.record_samples(job, 2, [{"prompt": "d"}])
    assert [r["prompt"] for r in store.samples(job)] == ["d"]


def test_a_database_of_another_schema_version_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'rlvr.db'}"
    JobStore(url).close()
    store = JobStore(url)  # same version: fine
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE rlvr_meta SET value = :v"), {"v": str(SCHEMA_VERSION + 1)})
    with pytest.raises(SchemaVersionError, match="RLVR_DB_URL"):
        JobStore(url)


def _write_metrics(url: str, job_id: str, steps: int) -> None:
    store = JobStore(url)
    for step in range(1, steps + 1):
        store.record_metrics(job_id, step, {"reward/mean": step, "loss": -step})


def test_another_process_writes_while_this_one_reads(tmp_path):
    url = f"sqlite:///{tmp_path / 'rlvr.db'}"
    store = JobStore(url)
    job = new_job(store)
    writer = mp.get_context("spawn").Process(target=_write_metrics, args=(url, job, 200))
    writer.start()
    seen = 0
    while writer.is_alive():  # reads never fail while the writer holds the file (WAL)
        seen = max(seen, len(store.metric_series(job).get("loss", [])))
    writer.join(timeout=60)
    assert writer.exitcode == 0
    assert len(store.metric_series(job)["loss"]) == 200
