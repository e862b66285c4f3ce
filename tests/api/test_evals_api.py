"""``/v1/evals`` and ``/v1/compare`` over HTTP against a real server and SQLite file: bad
requests are 422 naming the field, an eval-only job of a real (random) model runs in its own
process and reports progress and pass@k; compare returns curves by step and wall time, as
JSON and CSV, with its caps."""

from __future__ import annotations

import csv
import io
import shutil
import time

import pytest

from rlvr.config import JobSpec


@pytest.fixture(scope="module")
def eval_model(settings, random_model_dir):
    """The session's random Qwen2, copied under the service's model roots."""
    dest = settings.model_roots[0] / "rand"
    shutil.copytree(random_model_dir, dest)
    return dest


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"data": ["builtin:arithmetic?n=4"]}, None, "exactly one of model"),
        ({"model": "tiny:arithmetic", "job_id": "x", "data": ["x"]}, None, "exactly one"),
        ({"model": "rand", "data": ["builtin:arithmetic"], "samples": 65}, "samples", "64"),
        ({"model": "rand", "data": ["builtin:arithmetic"], "k": [0]}, "k", "1..64"),
        ({"model": "rand", "data": ["builtin:nope"]}, "data", "unknown built-in"),
        ({"model": "rand", "data": ["../outside.jsonl"]}, "data", "outside the data roots"),
        ({"model": "/etc", "data": ["builtin:arithmetic"]}, "model", "outside the model roots"),
        ({"model": "rand", "data": ["builtin:arithmetic"] * 9}, "data", "at most 8"),
        ({"model": "rand", "data": ["builtin:arithmetic"], "bogus": 1}, "bogus", "Extra inputs"),
        ({"job_id": "no-such-job", "data": ["builtin:arithmetic"]}, "job_id", "no job"),
        ({"model": "rand"}, "data", "at least one eval set"),
        ({"model": "/r\u0000and", "data": ["builtin:arithmetic"]}, "model", "NUL"),
        ({"model": "rand", "data": ["a\u0000.jsonl"]}, "data", "NUL"),
    ],
)
def test_bad_eval_requests_are_422_naming_the_field(http, eval_model, body, field, words):
    r = http.post("/v1/evals", json=body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert any(words in d["msg"] for d in detail), detail
    if field:
        assert any(field in map(str, d["loc"]) for d in detail), detail


@pytest.mark.slow
def test_an_eval_only_job_runs_and_reports_pass_at_k(http, eval_model):
    body = {"model": "rand", "data": ["builtin:arithmetic?n=4&seed=1"], "samples": 2, "k": [1, 2]}
    body["max_new_tokens"] = 8
    r = http.post("/v1/evals", json=body)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["status"] in ("queued", "running") and created["sets"] == {
        "arithmetic": "builtin:arithmetic?n=4&seed=1"
    }
    seen_progress, deadline = set(), time.monotonic() + 300
    while time.monotonic() < deadline:
        e = http.get(f"/v1/evals/{created['id']}").json()
        seen_progress.add(e["progress"])
        if e["status"] in ("succeeded", "failed"):
            break
        time.sleep(1)
    assert e["status"] == "succeeded", e
    assert e["progress"] == 1.0 and e["finished_at"] is not None
    (result,) = e["results"]
    m = result["metrics"]
    assert 0 <= m["eval/arithmetic/pass@1"] <= m["eval/arithmetic/pass@2"] <= 1
    assert 0 <= m["eval/accuracy"] <= 1 and m["eval/arithmetic/length_mean"] > 0
    assert created["id"] in [x["id"] for x in http.get("/v1/evals").json()["evals"]]


def test_an_unknown_eval_is_404(http):
    assert http.get("/v1/evals/eval-nope").status_code == 404


@pytest.fixture(scope="module")
def two_jobs(server, settings):
    from rlvr.jobs.store import JobStore

    store = JobStore(settings.db_url)  # the server's database, through a store of its own
    ids = []
    for n, name in enumerate(["fast", "slow"]):
        job = store.create_job(JobSpec(name=name), run_dir=str(settings.runs_dir / name))
        for step in range(1, 4):
            store.record_metrics(
                job.id, step, {"reward/mean": step * (n + 1) / 10, "time/step_s": 2.0 * (n + 1)}
            )
        ids.append(job.id)
    return ids


def test_compare_returns_each_jobs_curve_by_step_and_wall_time(http, two_jobs):
    r = http.get("/v1/compare", params={"jobs": ",".join(two_jobs), "metrics": "reward/mean"})
    assert r.status_code == 200, r.text
    data = r.json()
    slow = data["jobs"][two_jobs[1]]
    assert slow["name"] == "slow"
    assert slow["series"]["reward/mean"] == {
        "steps": [1, 2, 3],
        "values": [0.2, 0.4, 0.6],
        "wall_s": [4.0, 8.0, 12.0],
    }
    assert data["jobs"][two_jobs[0]]["series"]["reward/mean"]["wall_s"] == [2.0, 4.0, 6.0]


def test_compare_exports_csv(http, two_jobs):
    r = http.get(
        "/v1/compare", params={"jobs": two_jobs[0], "metrics": "reward/mean", "format": "csv"}
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [(x["step"], x["wall_s"], x["value"]) for x in rows] == [
        ("1", "2.0", "0.1"),
        ("2", "4.0", "0.2"),
        ("3", "6.0", "0.3"),
    ]


def test_compare_is_bounded_and_names_unknown_jobs(http, two_jobs):
    many = ",".join([two_jobs[0]] * 1 + [f"j{i}" for i in range(8)])
    assert http.get("/v1/compare", params={"jobs": many}).status_code == 422
    metrics = ",".join(f"m{i}" for i in range(9))
    r = http.get("/v1/compare", params={"jobs": two_jobs[0], "metrics": metrics})
    assert r.status_code == 422 and "metrics" in r.text
    assert http.get("/v1/compare", params={"jobs": "nope"}).status_code == 404


def test_prompt_pass_rates_of_a_job_longest_failing_first(http, settings):
    from rlvr.jobs.store import JobStore

    store = JobStore(settings.db_url)
    job = store.create_job(JobSpec(name="prompts"), run_dir=str(settings.runs_dir / "prompts"))
    for step in range(1, 5):
        store.record_samples(
            job.id,
            step,
            [
                {"id": "p0", "prompt": "1+1?", "passed": False},
                {"id": "p1", "prompt": "2+2?", "passed": step >= 3},
            ],
        )
    r = http.get(f"/v1/jobs/{job.id}/prompts", params={"limit": 1})
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["samples"], out["total"]) == (8, 2)
    assert [(p["id"], p["failing_for"], p["pass_rate"]) for p in out["prompts"]] == [("p0", 4, 0.0)]
    assert http.get("/v1/jobs/nope/prompts").status_code == 404
    assert http.get(f"/v1/jobs/{job.id}/prompts", params={"limit": 1001}).status_code == 422
