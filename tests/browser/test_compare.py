"""The compare view, evals table, sample filters and per-prompt pass rates in headless
Chromium, against a real server whose SQLite store holds two finished runs (their metrics
and samples written through the store, as drivers write them) and a finished eval."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from rlvr.api.app import create_app
from rlvr.api.server import BackgroundServer
from rlvr.api.settings import Settings
from rlvr.config import JobSpec
from rlvr.jobs.evals import EvalStore
from rlvr.jobs.store import JobStore

# Set RLVR_COMPARE_SCREENSHOT=docs/compare.png to refresh the committed screenshot.
SCREENSHOT = os.environ.get("RLVR_COMPARE_SCREENSHOT")

TRACES = """(id) => (document.getElementById(id).data || []).map((t) => [t.name, t.x.length, t.x[t.x.length - 1]])"""


CURRICULUM = {
    "curriculum/active": 40.0, "curriculum/retired": 5.0, "curriculum/pass_rate_eq0": 10.0,
    "curriculum/pass_rate_lt50": 12.0, "curriculum/pass_rate_ge50": 9.0, "curriculum/pass_rate_eq1": 9.0,
}  # fmt: skip


def _sample(step: int, i: int, passed: bool, reason: str) -> dict:
    return {
        "prompt": f"What is {i} + {i}?", "id": f"arith-{i}", "completion": "<think>x</think>7",
        "answer": "7", "think": "x", "reference": str(2 * i), "reward": float(passed),
        "passed": passed, "verdicts": {"math": {"score": float(passed), "passed": passed, "reason": reason}},
    }  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("compare")
    settings = Settings(
        db_url=f"sqlite:///{tmp_path / 'rlvr.db'}", runs_dir=tmp_path / "runs",
        data_roots=[tmp_path], model_roots=[tmp_path],
    )  # fmt: skip
    store = JobStore(settings.db_url)
    ids = []
    for n, name in enumerate(["baseline", "higher-lr"]):
        job = store.create_job(JobSpec(name=name), run_dir=str(tmp_path / "runs" / name))
        store.set_status(job.id, "running")
        for step in range(1, 11):
            store.record_metrics(job.id, step, {
                "reward/mean": 0.3 + 0.06 * step / (n + 1), "time/step_s": 1.5 * (n + 1),
                **({"eval/accuracy": 0.2 + 0.05 * step * (n + 1)} if step % 5 == 0 else {}),
                **(CURRICULUM if n == 1 else {}),  # only the second run set data.curriculum
            })  # fmt: skip
            # prompt 0 always fails (mismatch), prompt 1 passes from step 6, prompt 2 has no answer
            store.record_samples(job.id, step, [
                _sample(step, 0, False, "mismatch"), _sample(step, 1, step > 5, "ok" if step > 5 else "mismatch"),
                _sample(step, 2, False, "no_answer"),
            ])  # fmt: skip
        store.set_status(job.id, "succeeded")
        ids.append(job.id)
    evals = EvalStore(store.engine)
    e = evals.create({"targets": [{"label": "tiny:arithmetic", "model": "tiny:arithmetic", "step": None}],
                      "job_id": None, "sets": {"arithmetic": "builtin:arithmetic?n=200"}, "spec": {}})  # fmt: skip
    metrics = {"eval/accuracy": 0.61, "eval/arithmetic/pass@1": 0.58, "eval/arithmetic/pass@8": 0.93,
               "eval/arithmetic/maj@8": 0.7}  # fmt: skip
    evals.update(e.id, results=[{"model": "tiny:arithmetic", "step": None, "metrics": metrics}])
    evals.finish(e.id, "succeeded")
    running = evals.create(
        {"targets": [{"label": "step 20", "model": "/m", "step": 20}], "spec": {}}
    )
    evals.update(
        running.id, status="running", progress=0.4, message="step 20: arithmetic (1/1 sets)"
    )
    with BackgroundServer(create_app(settings, start_runner=False)) as srv:
        # The first /v1/evals call starts the eval runner, which fails evals a previous
        # service left running: mark this one running (as a live eval process would) after.
        httpx.get(srv.url + "/v1/evals", timeout=30).raise_for_status()
        evals.update(
            running.id, status="running", progress=0.4, error=None, finished_at=None,
            message="step 20: arithmetic (1/1 sets)",
        )  # fmt: skip
        srv.job_ids = ids
        yield srv


@pytest.mark.slow
def test_compare_overlays_chosen_runs_by_step_and_wall_time_and_evals_are_listed(server, page):
    a, b = server.job_ids
    page.goto(server.url + f"/#/compare?jobs={a}")
    page.wait_for_selector(f'#compare-jobs input[value="{b}"]')
    page.wait_for_function(
        "() => (document.getElementById('compare-chart').data || []).length === 1"
    )
    page.check(f'#compare-jobs input[value="{b}"]')
    page.wait_for_function(
        "() => (document.getElementById('compare-chart').data || []).length === 2"
    )
    assert page.evaluate(TRACES, "compare-chart") == [[a, 2, 10], [b, 2, 10]]  # eval/accuracy
    page.fill("#compare-metric", "reward/mean")
    page.dispatch_event("#compare-metric", "change")
    page.wait_for_function("() => document.getElementById('compare-chart').data[0].x.length === 10")
    page.select_option("#compare-x", "wall")
    page.wait_for_function("() => document.getElementById('compare-chart').data[1].x[9] === 0.5")
    assert page.evaluate(TRACES, "compare-chart") == [[a, 10, 0.25], [b, 10, 0.5]]  # minutes
    # the eval table: a finished eval's pass@k/maj@k, a running one's progress
    table = page.wait_for_selector("#compare-evals tr.eval-row")
    text = page.inner_text("#compare-evals").lower()  # headers are upper-cased by CSS
    assert "arithmetic/pass@8" in text and "0.930" in text and "0.700" in text
    assert page.get_attribute("#compare-evals progress", "value") == "0.4"
    assert table is not None
    with page.expect_download() as download:
        page.click("#compare-csv")
    csv_text = Path(download.value.path()).read_text()
    assert csv_text.splitlines()[0] == "job_id,job_name,metric,step,wall_s,value"
    assert len(csv_text.splitlines()) == 1 + 2 * 10
    if SCREENSHOT:
        page.screenshot(path=SCREENSHOT, full_page=True)
    page.goto(server.url + "/#/")  # the jobs page lists evals too
    page.wait_for_selector("#evals-table tr.eval-row")
    assert "tiny:arithmetic" in page.inner_text("#evals-table")


@pytest.mark.slow
def test_samples_filter_by_outcome_and_reason_and_prompts_rank_longest_failing(server, page):
    a = server.job_ids[0]
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.url + f"/#/jobs/{a}")
    page.wait_for_function("() => (document.getElementById('chart-reward').data || []).length > 0")
    page.wait_for_selector("#samples .sample")
    page.select_option("#sample-step", "all")
    page.wait_for_function("() => document.querySelectorAll('#samples .sample').length === 30")
    page.select_option("#sample-outcome", "failed")
    page.wait_for_function("() => document.querySelectorAll('#samples .sample').length === 25")
    assert page.locator("#samples .sample.passed").count() == 0
    page.select_option("#sample-reason", "math: no_answer")
    page.wait_for_function("() => document.querySelectorAll('#samples .sample').length === 10")
    page.select_option("#sample-outcome", "passed")
    page.wait_for_function("() => document.querySelectorAll('#samples .sample').length === 0")
    rows = page.locator("#prompt-stats tr.prompt-row")
    rows.first.wait_for()
    cells = [r.split("\t") for r in rows.all_inner_texts()]
    assert [c[1] for c in cells] == ["10", "10", "0"]  # arith-0 and arith-2 never passed
    assert cells[2][0].startswith("arith-1") and cells[2][4] == "10"
    assert errors == []  # the job page's own scripts ran clean beside compare.js


@pytest.mark.slow
def test_the_curriculum_chart_appears_only_for_a_run_that_writes_curriculum_metrics(server, page):
    plain, curriculum = server.job_ids
    page.goto(server.url + f"/#/jobs/{curriculum}")
    page.wait_for_function(
        "() => (document.getElementById('chart-curriculum').data || []).length === 6"
    )
    assert page.locator("#chart-curriculum").is_visible()
    names = [t[0] for t in page.evaluate(TRACES, "chart-curriculum")]
    assert names == list(CURRICULUM)
    page.goto(server.url + f"/#/jobs/{plain}")
    page.wait_for_function(
        "() => (document.getElementById('chart-reward').data || []).some((t) => t.x.length === 10)"
    )
    page.wait_for_timeout(500)  # one more draw after the metrics arrive
    assert not page.locator("#chart-curriculum").is_visible()
