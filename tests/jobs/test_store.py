"""The job store on a real SQLite file and on a real PostgreSQL server: upserts, sticky
statuses, events, schema versions, concurrent writers.

Every test taking ``db_url`` or ``store`` runs once per backend; the PostgreSQL runs use a
fresh database on the throwaway server of ``tests/jobs/conftest.py`` (skipped, with the
reason, where its binaries are not installed).
"""

from __future__ import annotations

import multiprocessing as mp
import threading
from pathlib import Path

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import make_url

from rlvr.config import JobSpec
from rlvr.jobs.store import SCHEMA_VERSION, JobStore, SchemaVersionError, StoreUnavailableError


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'rlvr.db'}"
    return request.getfixturevalue("postgres_db_url")


@pytest.fixture
def store(db_url: str):
    store = JobStore(db_url)
    yield store
    store.close()


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
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM metrics")).scalar() == 2


def test_non_finite_values_become_gaps_and_non_numbers_are_dropped(store):
    job = new_job(store)
    store.record_metrics(job, 1, {"kl": float("nan"), "loss": float("inf"), "note": "x", "ok": 1})
    assert store.metric_series(job) == {"kl": [(1, None)], "loss": [(1, None)], "ok": [(1, 1.0)]}


def test_numpy_steps_and_values_are_stored_as_plain_numbers(store):
    np = pytest.importorskip("numpy")
    job = new_job(store)
    store.record_metrics(job, np.int64(3), {"reward/mean": np.float32(0.5), "n": np.int64(7)})
    store.record_samples(job, np.int64(3), [{"reward": np.float64(1.0)}])
    store.record_checkpoint(job, np.int64(3), "/ckpt/step_3")
    assert store.metric_series(job) == {"n": [(3, 7.0)], "reward/mean": [(3, 0.5)]}
    assert store.samples(job) == [{"reward": 1.0, "step": 3}]
    assert store.get_job(job).step == 3


def test_metric_series_filters_by_name_and_since_step(store):
    job = new_job(store)
    for step in range(1, 5):
        store.record_metrics(job, step, {"reward/mean": step / 10, "loss": 1.0 / step})
    assert store.metric_series(job, names=["loss"], since_step=2) == {
        "loss": [(3, 1 / 3), (4, 0.25)]
    }
    assert store.metric_series(job, since_step=2**62) == {}


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


def test_an_error_with_nul_characters_is_kept_readable(store):
    # A crashed driver's log tail may hold anything; PostgreSQL text cannot hold NUL.
    job = new_job(store)
    assert store.set_status(job, "failed", error="Traceback\x00 boom")
    assert store.get_job(job).error == "Traceback\ufffd boom"
    assert store.events_after(job)[-1].payload["error"] == "Traceback\ufffd boom"


def test_a_nul_in_a_looked_up_id_or_name_finds_nothing_instead_of_failing(store):
    # Both come from URLs (/v1/jobs/a%00b, ?names=); PostgreSQL refuses NUL in a parameter.
    job = new_job(store)
    store.record_metrics(job, 1, {"a\x00b": 1.0, "loss": 2.0})
    assert store.get_job(job + "\x00") is None
    assert store.metric_series(job, names=["a\x00b"]) == {"a\ufffdb": [(1, 1.0)]}


def test_an_overlong_metric_name_is_refused_by_name(store):
    job = new_job(store)
    with pytest.raises(ValueError, match="reward/xxx.*128"):
        store.record_metrics(job, 1, {"reward/" + "x" * 200: 1.0, "ok": 1.0})
    assert store.metric_series(job) == {}  # nothing of that step was half-written


def test_jobs_list_newest_first_and_count_by_status(store):
    a, b, c = new_job(store, "a"), new_job(store, "b"), new_job(store, "c")
    store.set_status(b, "running")
    page, total = store.list_jobs(limit=2)
    assert total == 3 and [j.id for j in page] == [c, b]
    assert [j.id for j in store.list_jobs(status="queued")[0]] == [c, a]
    assert store.count_by_status() == {
        "queued": 2, "running": 1, "succeeded": 0, "failed": 0, "cancelled": 0,
    }  # fmt: skip
    store.set_dispatch(a, submission_id=a, ray_status="RUNNING")
    store.set_status(a, "cancelled")
    assert {j.id for j in store.jobs_for_runner()} == {a, b, c}  # a's Ray job may still run


def test_jobs_have_an_owner_and_a_priority_and_list_by_owner(store):
    a = store.create_job(JobSpec(name="a"), run_dir="/tmp/a", owner="alice", priority=5)
    b = store.create_job(JobSpec(name="b"), run_dir="/tmp/b")
    assert (a.owner, a.priority) == ("alice", 5)
    assert (store.get_job(b.id).owner, store.get_job(b.id).priority) == ("admin", 0)
    page, total = store.list_jobs(owner="alice")
    assert total == 1 and [j.id for j in page] == [a.id]
    assert store.list_jobs(owner="bob") == ([], 0)
    assert store.list_jobs()[1] == 2


def test_queue_positions_follow_priority_then_age_and_skip_dispatched_jobs(store):
    old, high, new, sent = (
        store.create_job(JobSpec(name=n), run_dir="/tmp/r", priority=p).id
        for n, p in (("old", 0), ("high", 3), ("new", 0), ("sent", 9))
    )
    store.set_dispatch(sent, submission_id=sent, ray_status="PENDING")  # in Ray already
    assert store.queue_positions() == {high: 1, old: 2, new: 3}
    assert [j.id for j in store.jobs_for_runner()] == [sent, high, old, new]
    store.set_status(high, "cancelled")
    assert store.queue_positions() == {old: 1, new: 2}


def test_a_requeued_job_resumes_as_a_new_attempt_and_its_old_driver_is_ignored(store):
    job = new_job(store)
    assert not store.requeue(job)  # never dispatched: nothing to interrupt
    store.set_dispatch(job, submission_id=job, ray_status="RUNNING")
    store.set_status(job, "running", step=3, attempt=1)
    assert store.requeue(job)
    again = store.get_job(job)
    assert (again.status, again.attempt, again.resume, again.submission_id, again.step) == (
        "queued", 2, True, None, 3,
    )  # fmt: skip
    assert not store.set_status(job, "cancelled", attempt=1)  # the interrupted driver
    assert store.get_job(job).status == "queued"
    store.set_status(job, "succeeded", attempt=2)
    assert not store.requeue(job)  # terminal jobs stay as they are


def test_a_version_1_database_is_migrated_and_keeps_its_jobs(db_url):
    store = JobStore(db_url)
    job = new_job(store)
    with store.engine.begin() as conn:  # what an rlvr of schema version 1 created
        conn.execute(text("ALTER TABLE jobs DROP COLUMN owner"))
        conn.execute(text("ALTER TABLE jobs DROP COLUMN priority"))
        conn.execute(text("UPDATE rlvr_meta SET value = '1'"))
    store.close()
    store = JobStore(db_url)
    try:
        record = store.get_job(job)
        assert (record.owner, record.priority) == ("admin", 0)
        assert store.create_job(JobSpec(name="n"), run_dir="/r", owner="bo").owner == "bo"
        with store.engine.connect() as conn:
            assert conn.scalar(text("SELECT value FROM rlvr_meta")) == str(SCHEMA_VERSION)
    finally:
        store.close()


def test_events_are_an_ordered_cursor(store):
    job = new_job(store)
    store.set_status(job, "running")
    store.record_metrics(job, 1, {"reward/mean": 0.1})
    store.record_checkpoint(job, 1, "/ckpt/step_1")
    events = store.events_after(job)
    assert [e.kind for e in events] == ["status", "status", "metrics", "checkpoint"]
    assert [e.kind for e in store.events_after(job, events[1].id)] == ["metrics", "checkpoint"]
    assert store.last_event_id(job) == events[-1].id
    assert store.events_after(job, 2**62) == []


def test_a_watcher_never_misses_an_event_that_commits_late(store):
    """Two writers of one job (say a dying driver and its resume) write at once, the first
    slow to commit. A watcher reading in between must not move its cursor past the slow
    event's id before that event is visible: on PostgreSQL ids come from a sequence at
    insert, so a later writer's event could commit first unless writers of a job take turns."""
    job = new_job(store)
    slow_writer_at_commit, let_commit = threading.Event(), threading.Event()

    def hold_commit(conn):
        if threading.current_thread().name == "slow-writer":
            slow_writer_at_commit.set()
            let_commit.wait(timeout=30)

    event.listen(store.engine, "commit", hold_commit)
    slow = threading.Thread(
        target=store.record_checkpoint, args=(job, 1, "/ckpt/1"), name="slow-writer", daemon=True
    )
    fast = threading.Thread(
        target=store.record_samples, args=(job, 1, [{"prompt": "p"}]), name="fast", daemon=True
    )
    slow.start()
    assert slow_writer_at_commit.wait(timeout=30)
    fast.start()
    fast.join(timeout=1)  # finishes here only where writers of one job do not take turns

    seen = store.events_after(job)
    cursor = seen[-1].id
    let_commit.set()
    slow.join(timeout=60)
    fast.join(timeout=60)
    event.remove(store.engine, "commit", hold_commit)
    assert not slow.is_alive() and not fast.is_alive()
    seen += store.events_after(job, cursor)
    assert [e.kind for e in seen] == ["status", "checkpoint", "samples"]
    assert [e.id for e in seen] == [e.id for e in store.events_after(job)]


def test_samples_of_a_replayed_step_replace_the_old_ones(store):
    job = new_job(store)
    store.record_samples(job, 2, [{"prompt": "a"}, {"prompt": "b"}, {"prompt": "c"}])
    store.record_samples(job, 2, [{"prompt": "d\x00", "nan": float("nan")}])
    assert store.samples(job) == [{"prompt": "d\x00", "nan": None, "step": 2}]


def test_a_database_of_another_schema_version_is_refused(db_url):
    JobStore(db_url).close()
    store = JobStore(db_url)  # same version: fine
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE rlvr_meta SET value = :v"), {"v": str(SCHEMA_VERSION + 1)})
    store.close()
    with pytest.raises(SchemaVersionError, match="RLVR_DB_URL") as refused:
        JobStore(db_url)
    password = make_url(db_url).password
    assert not password or password not in str(refused.value)


def test_a_database_with_foreign_tables_of_the_same_names_is_refused(db_url):
    store = JobStore(db_url)
    with store.engine.begin() as conn:
        conn.execute(text("DROP TABLE rlvr_meta"))
    store.close()
    with pytest.raises(SchemaVersionError, match="no rlvr_meta version row"):
        JobStore(db_url)


def test_services_starting_together_create_the_schema_once(db_url):
    opened, errors = [], []
    start = threading.Barrier(6)

    def open_store():
        start.wait(timeout=30)
        try:
            opened.append(JobStore(db_url))
        except Exception as exc:  # the assertion below shows it
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == [] and len(opened) == 6
    job = new_job(opened[0])
    assert opened[-1].get_job(job) is not None
    for store in opened:
        store.close()


def test_an_unreachable_database_is_a_clear_error_without_the_password(tmp_path):
    closed_port = _closed_port()
    url = f"postgresql+psycopg://rlvr:hunter2@127.0.0.1:{closed_port}/rlvr"
    with pytest.raises(StoreUnavailableError, match=f"127.0.0.1:{closed_port}.*RLVR_DB_URL") as e:
        JobStore(url)
    assert "hunter2" not in str(e.value)
    assert isinstance(e.value, ValueError)  # the CLI shows it as a usage error (exit 2)
    with pytest.raises(StoreUnavailableError, match="postgresql\\+psycopg://"):
        JobStore("postgresql+nosuchdriver://u:p@127.0.0.1/db")
    with pytest.raises(StoreUnavailableError, match="RLVR_DB_URL"):
        JobStore("not a url")
    (tmp_path / "a-file").write_text("")
    with pytest.raises(StoreUnavailableError, match="a-file"):
        JobStore(f"sqlite:///{tmp_path / 'a-file' / 'rlvr.db'}")


def test_postgres_sessions_time_out_instead_of_waiting_forever(postgres_db_url):
    plain = make_url(postgres_db_url).set(drivername="postgresql")  # psycopg 3, not psycopg2
    store = JobStore(plain.render_as_string(hide_password=False))
    assert store.engine.dialect.driver == "psycopg"
    with store.engine.connect() as conn:
        assert conn.execute(text("SHOW lock_timeout")).scalar() == "30s"
        assert conn.execute(text("SHOW idle_in_transaction_session_timeout")).scalar() == "1min"
    store.close()


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once it is closed


def _write_metrics(url: str, job_id: str, steps: int) -> None:
    store = JobStore(url)
    for step in range(1, steps + 1):
        store.record_metrics(job_id, step, {"reward/mean": step, "loss": -step})


def test_another_process_writes_while_this_one_reads(store, db_url):
    job = new_job(store)
    writer = mp.get_context("spawn").Process(target=_write_metrics, args=(db_url, job, 200))
    writer.start()
    seen = 0
    while writer.is_alive():  # reads never fail while the other process writes
        seen = max(seen, len(store.metric_series(job).get("loss", [])))
    writer.join(timeout=60)
    assert writer.exitcode == 0
    assert len(store.metric_series(job)["loss"]) == 200
    assert store.get_job(job).step == 200
    steps = [e.payload["step"] for e in store.events_after(job, limit=1000) if e.kind == "metrics"]
    assert steps == list(range(1, 201))


def _race_statuses(url: str, job_ids: list[str], status: str, barrier) -> None:
    store = JobStore(url)
    for job_id in job_ids:
        barrier.wait(timeout=60)  # every process writes the same job at the same moment
        store.set_status(job_id, status)
    store.close()


def test_processes_moving_a_job_at_once_make_one_transition_and_one_event(store, db_url):
    # The service's runner and the job's driver both write `running` when a job starts, and a
    # runner may find a job failed while its driver writes `succeeded`: one of them wins, and
    # the job's event stream shows that one only (on SQLite a status read before the
    # transaction's first write was not locked: both wrote, each with its event).
    jobs = [new_job(store, f"race{i}") for i in range(12)]
    ctx = mp.get_context("spawn")
    for statuses in (["running"] * 4, ["succeeded", "failed", "succeeded", "failed"]):
        barrier = ctx.Barrier(len(statuses))
        procs = [
            ctx.Process(target=_race_statuses, args=(db_url, jobs, status, barrier))
            for status in statuses
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=120)
            assert p.exitcode == 0
    for job_id in jobs:
        moves = [e.payload["status"] for e in store.events_after(job_id) if e.kind == "status"]
        assert moves[:2] == ["queued", "running"] and len(moves) == 3, moves
        assert moves[2] in ("succeeded", "failed") and store.get_job(job_id).status == moves[2]
