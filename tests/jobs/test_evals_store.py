"""The evals table (rlvr/jobs/evals.py) on a real SQLite file: create, progress, results,
listing per owner, and a running eval left by a previous service marked failed."""

from __future__ import annotations

from rlvr.jobs.evals import EvalRunner, EvalStore
from rlvr.jobs.store import JobStore


def test_evals_live_beside_the_jobs_and_keep_progress_and_results(tmp_path):
    store = EvalStore(JobStore(f"sqlite:///{tmp_path / 'rlvr.db'}").engine)
    mine = store.create({"targets": [], "spec": {}}, owner="ann")
    other = store.create({"targets": [], "spec": {}}, owner="bob")
    store.update(mine.id, status="running", progress=0.5, message="half")
    store.update(mine.id, results=[{"model": "m", "step": 2, "metrics": {"eval/accuracy": 0.5}}])
    store.finish(mine.id, "succeeded")
    got = store.get(mine.id)
    assert (got.status, got.progress, got.results[0]["step"]) == ("succeeded", 1.0, 2)
    assert got.finished_at is not None
    assert [e.id for e in store.list(owner="ann")] == [mine.id]
    assert {e.id for e in store.list()} == {mine.id, other.id}
    assert store.get("nope\x00") is None


def test_a_runner_fails_evals_a_previous_service_left_running(tmp_path):
    url = f"sqlite:///{tmp_path / 'rlvr.db'}"
    store = EvalStore(JobStore(url).engine)
    orphan = store.create({"targets": [], "spec": {}})
    store.update(orphan.id, status="running")
    runner = EvalRunner(store, url)
    try:
        got = store.get(orphan.id)
        assert got.status == "failed" and "restarted" in got.error
    finally:
        runner.stop()
