"""The /v1 job resources over real HTTP, with the store written as a driver writes it."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from rlvr.api.app import create_app
from rlvr.api.server import BackgroundServer
from rlvr.jobs.sink import StoreSink
from rlvr.jobs.store import JobStore


@pytest.fixture(scope="module")
def store(settings) -> JobStore:
    return JobStore(settings.db_url)  # a second engine, as the driver process has


def submit(http, **spec) -> str:
    r = http.post("/v1/jobs", json={"name": "t", "algorithm": {"max_steps": 5}, **spec})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def sample_row(step: int, passed: bool) -> dict:
    return {
        "prompt": "What is 2 + 3?", "completion": "<think>2+3=5</think><answer>5</answer>",
        "think": "2+3=5", "answer": "<answer>5</answer>", "reference": "5",
        "reward": 1.1 if passed else 0.1, "passed": passed,
        "verdicts": {"math": {"score": 1.0 if passed else 0.0, "passed": passed,
                              "reason": "ok" if passed else "mismatch", "details": {}}},
    }  # fmt: skip


def read_events(url: str, job_id: str, out: list, after: int = 0, headers=None) -> None:
    with httpx.stream("GET", f"{url}/v1/jobs/{job_id}/events", params={"after": after},
                      headers=headers or {}, timeout=httpx.Timeout(10, read=60)) as r:  # fmt: skip
        assert r.headers["content-type"].startswith("text/event-stream")
        event = {}
        for line in r.iter_lines():
            if line.startswith("event:"):
                event["event"] = line[6:].strip()
            elif line.startswith("id:"):
                event["id"] = int(line[3:])
            elif line.startswith("data:"):
                event["data"] = json.loads(line[5:])
            elif not line and event:
                out.append(event)
                event = {}


def test_unknown_job_is_404_on_every_resource(http):
    for path in ["", "/metrics", "/samples", "/checkpoints", "/logs", "/events"]:
        assert http.get(f"/v1/jobs/nope-123{path}").status_code == 404, path
    assert http.post("/v1/jobs/nope-123/cancel").status_code == 404


def test_job_lists_newest_first_and_filters_by_status(http):
    a, b = submit(http, name="first"), submit(http, name="second")
    jobs = http.get("/v1/jobs", params={"status": "queued"}).json()["jobs"]
    ids = [j["id"] for j in jobs]
    assert ids.index(b) < ids.index(a)
    http.post(f"/v1/jobs/{a}/cancel")
    assert a not in [
        j["id"] for j in http.get("/v1/jobs", params={"status": "queued"}).json()["jobs"]
    ]
    page = http.get("/v1/jobs", params={"limit": 1}).json()
    assert len(page["jobs"]) == 1 and page["total"] >= 2


def test_metrics_come_back_as_series_filtered_by_name_and_step(http, store):
    job = submit(http)
    sink = StoreSink(store, job)
    for step in range(1, 5):
        sink.metrics(step, {"reward/mean": step / 10, "accuracy": step / 8, "loss": 1.0 / step})
    sink.metrics(2, {"reward/mean": 0.25})  # a replayed step overwrites, never duplicates
    series = http.get(f"/v1/jobs/{job}/metrics").json()["series"]
    assert series["reward/mean"] == {"steps": [1, 2, 3, 4], "values": [0.1, 0.25, 0.3, 0.4]}
    some = http.get(f"/v1/jobs/{job}/metrics?names=accuracy,loss&since_step=2").json()["series"]
    assert set(some) == {"accuracy", "loss"}
    assert some["accuracy"]["steps"] == [3, 4]
    repeated = http.get(
        f"/v1/jobs/{job}/metrics", params=[("names", "loss"), ("names", "accuracy")]
    )
    assert set(repeated.json()["series"]) == {"accuracy", "loss"}
    detail = http.get(f"/v1/jobs/{job}").json()
    assert detail["step"] == 4 and detail["reward_mean"] == 0.4 and detail["accuracy"] == 0.5


def test_event_stream_pushes_metrics_and_status_then_ends(server, http, store):
    job = submit(http)
    events: list = []
    reader = threading.Thread(target=read_events, args=(server.url, job, events))
    reader.start()
    sink = StoreSink(store, job)
    sink.status("running")
    for step in range(1, 4):
        time.sleep(0.2)
        sink.metrics(step, {"reward/mean": 0.1 * step})
    sink.samples(3, [sample_row(3, True)])
    sink.checkpoint(3, "/tmp/ckpt/step_3")
    sink.status("succeeded", step=3)
    reader.join(timeout=30)
    assert not reader.is_alive(), "the stream did not end after the job finished"
    kinds = [e["event"] for e in events]
    assert kinds == [
        "status",
        "status",
        "metrics",
        "metrics",
        "metrics",
        "samples",
        "checkpoint",
        "status",
    ]
    assert [e["data"]["step"] for e in events if e["event"] == "metrics"] == [1, 2, 3]
    assert events[-1]["data"]["status"] == "succeeded"
    ids = [e["id"] for e in events]
    assert ids == sorted(ids)
    # Reconnecting after an event id replays only what came later.
    later: list = []
    read_events(server.url, job, later, headers={"Last-Event-ID": str(ids[4])})
    assert [e["id"] for e in later] == ids[5:]
    # A Last-Event-ID that is not a plain number (here "²", a digit to str.isdigit) is ignored.
    replay: list = []
    read_events(server.url, job, replay, headers={"Last-Event-ID": b"\xb2"})
    assert [e["id"] for e in replay] == ids


def test_samples_show_think_answer_and_verdicts_newest_step_first(http, store):
    job = submit(http)
    sink = StoreSink(store, job)
    sink.samples(1, [sample_row(1, False)])
    sink.samples(2, [sample_row(2, True), sample_row(2, False)])
    out = http.get(f"/v1/jobs/{job}/samples").json()["samples"]
    assert [s["step"] for s in out] == [2, 2, 1]
    assert out[0]["think"] == "2+3=5" and out[0]["answer"] == "<answer>5</answer>"
    assert out[0]["verdicts"]["math"]["passed"] is True
    assert out[1]["verdicts"]["math"]["reason"] == "mismatch"
    only = http.get(f"/v1/jobs/{job}/samples", params={"step": 1}).json()["samples"]
    assert [s["step"] for s in only] == [1]


def test_cancel_then_resume_needs_a_checkpoint(http, store):
    job = submit(http)
    r = http.post(f"/v1/jobs/{job}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert http.post(f"/v1/jobs/{job}/cancel").status_code == 409
    r = http.post(f"/v1/jobs/{job}/resume")
    assert r.status_code == 409 and "no checkpoint" in r.json()["detail"]
    StoreSink(store, job).checkpoint(2, "/tmp/ckpt/step_2")
    r = http.post(f"/v1/jobs/{job}/resume")
    assert r.status_code == 202 and r.json()["status"] == "queued"
    detail = http.get(f"/v1/jobs/{job}").json()
    assert detail["attempt"] == 2 and detail["error"] is None
    assert http.get(f"/v1/jobs/{job}/checkpoints").json()["checkpoints"][0]["step"] == 2
    assert http.post(f"/v1/jobs/{job}/resume").status_code == 409  # queued: not resumable


def test_a_late_write_from_an_old_attempt_does_not_relabel_the_job(http, store):
    job = submit(http)
    old = StoreSink(store, job, attempt=1)
    http.post(f"/v1/jobs/{job}/cancel")
    old.status("succeeded")  # a dying driver: terminal states are sticky
    assert http.get(f"/v1/jobs/{job}").json()["status"] == "cancelled"
    old.checkpoint(1, "/tmp/ckpt/step_1")
    http.post(f"/v1/jobs/{job}/resume")
    old.status("failed", error="old driver")  # attempt 1 writing into attempt 2
    assert http.get(f"/v1/jobs/{job}").json()["status"] == "queued"


def test_logs_fall_back_to_the_run_dirs_driver_log(http, store):
    job = submit(http)
    run_dir = Path(http.get(f"/v1/jobs/{job}").json()["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)  # submission wrote plan.json there
    (run_dir / "driver.log").write_text("".join(f"line {i}\n" for i in range(500)))
    out = http.get(f"/v1/jobs/{job}/logs", params={"tail": 3}).json()
    assert out["source"] == "file" and out["text"] == "line 497\nline 498\nline 499"


def test_verify_scores_a_completion_and_names_bad_input(http):
    r = http.post(
        "/v1/verify",
        json={
            "verifier": "math",
            "completion": "<think>2+2</think><answer>4</answer>",
            "reference": "4",
        },
    )
    assert r.status_code == 200 and r.json()["passed"] is True and r.json()["score"] == 1.0
    r = http.post(
        "/v1/verify",
        json={"verifier": "math", "completion": "<answer>5</answer>", "reference": "4"},
    )
    assert r.json()["passed"] is False
    r = http.post("/v1/verify", json={"verifier": "chess", "completion": "x", "reference": "4"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "verifier"]
    r = http.post(
        "/v1/verify", json={"verifier": "countdown", "completion": "1+2", "reference": "3"}
    )
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "reference"]
    names = {v["name"] for v in http.get("/v1/verifiers").json()}
    assert {"math", "think_format", "countdown"} <= names


def test_health_prometheus_dashboard_and_examples(http):
    health = http.get("/healthz").json()
    assert health["status"] == "ok" and "queued" in health["jobs"]
    text = http.get("/metrics").text
    assert 'rlvr_jobs{status="queued"}' in text and "rlvr_http_requests_total" in text
    page = http.get("/")
    assert page.status_code == 200 and "plotly.min.js" in page.text
    js = http.get("/static/vendor/plotly.min.js")
    assert js.status_code == 200 and len(js.content) > 1_000_000  # the real bundle, no CDN
    assert http.get("/static/app.js").status_code == 200
    examples = http.get("/v1/examples").json()
    assert examples and all("name:" in e["yaml"] or "name" in e["yaml"] for e in examples)


def test_token_is_required_on_v1_when_set(settings, tmp_path):
    secured = settings.model_copy(
        update={"api_token": "s3cret", "db_url": f"sqlite:///{tmp_path}/a.db"}
    )
    with BackgroundServer(create_app(secured, start_runner=False)) as srv:
        for method, path in [("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("GET", "/v1/verifiers"),
                             ("GET", "/v1/jobs/x/events"), ("POST", "/v1/verify")]:  # fmt: skip
            r = httpx.request(method, srv.url + path, json={})
            assert r.status_code == 401, (method, path)
            assert r.headers["www-authenticate"] == "Bearer"
        bad = httpx.get(srv.url + "/v1/jobs", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401
        ok = httpx.get(srv.url + "/v1/jobs", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert httpx.get(srv.url + "/healthz").status_code == 200
