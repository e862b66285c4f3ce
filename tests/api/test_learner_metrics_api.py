"""Every learner metric, as the driver's sink writes it, comes back from the API the
dashboard reads: the series it loads, the name filter, the job's latest values and the
live event stream; a skipped step's non-finite gradient norm is a gap, not a lost step."""

from __future__ import annotations

import json

import httpx
import pytest

from rlvr.jobs.sink import StoreSink
from rlvr.jobs.store import JobStore
from rlvr.train.update import LEARNER_METRICS


@pytest.fixture(scope="module")
def store(settings) -> JobStore:
    return JobStore(settings.db_url)  # a second engine, as the driver process has


def test_every_learner_metric_reaches_the_api_the_dashboard_reads(server, http, store):
    r = http.post("/v1/jobs", json={"name": "t", "algorithm": {"max_steps": 2}})
    assert r.status_code == 201, r.text
    job = r.json()["id"]
    sink = StoreSink(store, job)
    sink.status("running")
    step1 = {name: 0.5 for name in LEARNER_METRICS}
    step2 = {**step1, "learner/skipped_steps": 1.0, "grad_norm": float("nan")}
    sink.metrics(1, step1)
    sink.metrics(2, step2)
    sink.status("succeeded", step=2)

    series = http.get(f"/v1/jobs/{job}/metrics").json()["series"]  # the dashboard's load
    assert [k for k in LEARNER_METRICS if k not in series] == []
    assert series["learner/skipped_steps"] == {"steps": [1, 2], "values": [0.5, 1.0]}
    assert series["grad_norm"] == {"steps": [1, 2], "values": [0.5, None]}
    # Asked for by name (comma-separated: no metric name may hold a comma).
    named = http.get(f"/v1/jobs/{job}/metrics", params={"names": ",".join(LEARNER_METRICS)})
    assert sorted(named.json()["series"]) == sorted(LEARNER_METRICS)
    latest = http.get(f"/v1/jobs/{job}").json()["latest_metrics"]
    assert latest["learner/skipped_steps"] == 1.0

    # The live stream the dashboard follows carries every name of every step.
    pushed = []
    with httpx.stream("GET", f"{server.url}/v1/jobs/{job}/events", timeout=30) as stream:
        kind = None
        for line in stream.iter_lines():  # ends with the job
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:") and kind == "metrics":
                pushed.append(json.loads(line[5:]))
    assert [p["step"] for p in pushed] == [1, 2]
    for p in pushed:
        assert [k for k in LEARNER_METRICS if k not in p["values"]] == []
