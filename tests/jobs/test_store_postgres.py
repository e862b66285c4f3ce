"""The service on a real PostgreSQL job store: real uvicorn over HTTP, a second engine writing
as a job's driver does, no Ray (the runner is not started: jobs stay where the test puts
them). The store's own behaviour on both backends is in ``test_store.py``."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import yaml

from rlvr.api.app import create_app
from rlvr.api.server import BackgroundServer
from rlvr.api.settings import Settings
from rlvr.jobs.sink import StoreSink
from rlvr.jobs.store import JobStore


@pytest.fixture
def settings(postgres_db_url: str, tmp_path: Path) -> Settings:
    (tmp_path / "data").mkdir()
    (tmp_path / "models").mkdir()
    return Settings(
        db_url=postgres_db_url,
        data_roots=[tmp_path / "data"],
        model_roots=[tmp_path / "models"],
        runs_dir=tmp_path / "runs",
    )


def serve(settings: Settings) -> BackgroundServer:
    return BackgroundServer(create_app(settings, start_runner=False))


def read_events(url: str, job_id: str, **params) -> list[dict]:
    """The whole SSE stream of a finished job (the server ends it after the last event)."""
    events, current = [], {}
    with httpx.stream(
        "GET", f"{url}/v1/jobs/{job_id}/events", params=params,
        timeout=httpx.Timeout(10, read=30),
    ) as r:  # fmt: skip
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith(("event:", "id:", "data:")):
                key, _, value = line.partition(":")
                current[key] = value.strip()
            elif not line and current:
                events.append({"event": current["event"], "id": int(current["id"]),
                               "data": json.loads(current["data"])})  # fmt: skip
                current = {}
    return events


def test_jobs_submitted_over_http_are_listed_followed_and_survive_a_restart(settings):
    driver_store = JobStore(settings.db_url)  # a second engine, as the driver process has
    with serve(settings) as srv, httpx.Client(base_url=srv.url, timeout=30) as http:
        spec = {"name": "pg-one", "algorithm": {"max_steps": 3}}
        r = http.post("/v1/jobs", json=spec)
        assert r.status_code == 201, r.text
        one = r.json()["id"]
        r = http.post(
            "/v1/jobs",
            content=yaml.safe_dump({"name": "pg-two"}),
            headers={"Content-Type": "application/yaml"},
        )
        assert r.status_code == 201, r.text
        two = r.json()["id"]
        listed = http.get("/v1/jobs").json()
        assert [j["id"] for j in listed["jobs"]] == [two, one] and listed["total"] == 2
        bad = http.post("/v1/jobs", json={"name": "x", "algorithm": {"lr": -1}})
        assert bad.status_code == 422 and "lr" in json.dumps(bad.json())

        # The driver's writes: a replayed step, samples, a checkpoint, the end.
        sink = StoreSink(driver_store, one)
        sink.status("running")
        for step in (1, 2, 2, 3):
            sink.metrics(step, {"reward/mean": step / 10, "accuracy": step / 4, "kl": float("nan")})
        sink.samples(3, [{"prompt": "2+3?", "completion": "<answer>5</answer>", "reward": 1.0}])
        sink.checkpoint(3, "/ckpt/step_3")
        sink.status("succeeded", step=3)

        series = http.get(f"/v1/jobs/{one}/metrics").json()["series"]
        assert series["reward/mean"] == {"steps": [1, 2, 3], "values": [0.1, 0.2, 0.3]}
        assert series["kl"]["values"] == [None, None, None]
        later = http.get(f"/v1/jobs/{one}/metrics", params={"since_step": 2, "names": "accuracy"})
        assert later.json()["series"] == {"accuracy": {"steps": [3], "values": [0.75]}}
        # The largest bounds the API accepts are beyond PostgreSQL's INTEGER: empty, not 500.
        huge = 2**62
        assert (
            http.get(f"/v1/jobs/{one}/metrics", params={"since_step": huge}).json()["series"] == {}
        )
        assert http.get(f"/v1/jobs/{one}/samples", params={"step": huge}).json()["samples"] == []
        assert http.get("/v1/jobs", params={"offset": 10_000_000}).json()["jobs"] == []
        assert http.get("/v1/jobs/a%00b").status_code == 404  # NUL: no such job, not a 500
        nul = http.get(f"/v1/jobs/{one}/metrics", params={"names": "kl\x00"})
        assert nul.status_code == 200 and nul.json()["series"] == {}

        detail = http.get(f"/v1/jobs/{one}").json()
        assert (detail["status"], detail["step"], detail["reward_mean"]) == ("succeeded", 3, 0.3)
        samples = http.get(f"/v1/jobs/{one}/samples").json()["samples"]
        assert [(s["step"], s["reward"]) for s in samples] == [(3, 1.0)]
        events = read_events(srv.url, one)
        assert [e["event"] for e in events] == (
            ["status", "status"] + ["metrics"] * 4 + ["samples", "checkpoint", "status"]
        )
        assert events[-1]["data"]["status"] == "succeeded"
        assert read_events(srv.url, one, after=events[5]["id"]) == events[6:]
        assert read_events(srv.url, one, after=huge) == []

        r = http.post(f"/v1/jobs/{two}/cancel")
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        assert http.get("/healthz").json()["jobs"]["cancelled"] == 1
        assert 'rlvr_jobs{status="succeeded"} 1.0' in http.get("/metrics").text

    with serve(settings) as srv, httpx.Client(base_url=srv.url, timeout=30) as http:
        jobs = {j["id"]: j for j in http.get("/v1/jobs").json()["jobs"]}
        assert jobs[one]["status"] == "succeeded" and jobs[two]["status"] == "cancelled"
        series = http.get(f"/v1/jobs/{one}/metrics").json()["series"]
        assert series["reward/mean"]["steps"] == [1, 2, 3]
        assert http.get(f"/v1/jobs/{one}/checkpoints").json()["checkpoints"][0]["step"] == 3
    driver_store.close()
