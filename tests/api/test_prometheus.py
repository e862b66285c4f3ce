"""GET /metrics over real HTTP: per-job gauges from the store as a driver writes it, a bounded
label set, who may scrape, and the deploy/ scrape config and Grafana dashboard that read it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from rlvr.api.app import create_app
from rlvr.api.routes import prometheus
from rlvr.api.server import BackgroundServer
from rlvr.api.settings import Settings
from rlvr.config import JobSpec
from rlvr.jobs.sink import StoreSink
from rlvr.jobs.store import JobStore

REPO = Path(__file__).resolve().parents[2]
ADMIN, ALICE, SCRAPER = (
    "admin-token-0123456789",
    "alice-token-0123456789",
    "scrape-token-0123456789",
)


@pytest.fixture(scope="module")
def store(settings) -> JobStore:
    return JobStore(settings.db_url)  # a second engine, as the driver process has


def scrape(client: httpx.Client, **kw) -> dict[str, list]:
    """``{family: [(labels, value), ...]}`` as Prometheus' own text parser reads the page."""
    r = client.get("/metrics", **kw)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {
        f.name: [(s.labels, s.value) for s in f.samples if not s.name.endswith("_created")]
        for f in text_string_to_metric_families(r.text)
    }


def new_job(store: JobStore, tmp_path: Path, name: str, owner: str = "alice") -> str:
    spec = JobSpec(name="j").model_copy(update={"name": name})  # the store takes what it is given
    return store.create_job(spec, run_dir=str(tmp_path / name[:8]), owner=owner).id


def test_per_job_gauges_queue_length_and_counts(http, store, tmp_path):
    running = new_job(store, tmp_path, "grpo-run")
    store.set_status(running, "running", step=0)
    sink = StoreSink(store, running)
    for step in (1, 2, 3):
        sink.metrics(step, {"reward/mean": step / 10, "accuracy": step / 4,
                            "throughput/rollout_tok_s": 100.0 * step, "throughput/learn_tok_s": 50.0})  # fmt: skip
    store.set_status(running, "running", step=3)
    done = new_job(store, tmp_path, "finished-run")
    store.set_status(done, "running", step=0)
    StoreSink(store, done).metrics(1, {"reward/mean": 0.9})
    store.set_status(done, "succeeded", step=1)
    queued = [new_job(store, tmp_path, f"waiting-{i}") for i in range(2)]

    page = scrape(http)
    mine = {"job": running, "name": "grpo-run", "owner": "alice"}
    assert (mine, 3.0) in page["rlvr_job_step"]
    assert (mine, 1.0) in page["rlvr_job_running"]
    assert (mine, pytest.approx(0.3)) in page["rlvr_job_reward_mean"]
    assert (mine, 0.75) in page["rlvr_job_accuracy"]
    assert (mine, 300.0) in page["rlvr_job_rollout_tokens_per_second"]
    assert (mine, 50.0) in page["rlvr_job_learn_tokens_per_second"]
    # A job that just finished keeps its last values for a while (scraped at least once) ...
    finished = {"job": done, "name": "finished-run", "owner": "alice"}
    assert (finished, 0.0) in page["rlvr_job_running"]
    assert (finished, 0.9) in page["rlvr_job_reward_mean"]
    # ... queued jobs have no per-job series, only the queue length and the counts.
    assert not {lab["job"] for lab, _ in page["rlvr_job_step"]} & set(queued)
    assert page["rlvr_queue_length"] == [({}, 2.0)]
    counts = {lab["status"]: v for lab, v in page["rlvr_jobs"]}
    assert counts["queued"] == 2 and counts["running"] == 1 and counts["succeeded"] == 1
    again = scrape(http)  # the first scrape is counted once it is answered
    assert any(lab.get("route") == "/metrics" for lab, _ in again["rlvr_http_requests"])

    # Long after it finished, a job drops out of the per-job series.
    later = time.time() + prometheus.RECENT_S + 1
    assert done not in [j.id for j in prometheus.scraped_jobs(store, now=later)]
    assert running in [j.id for j in prometheus.scraped_jobs(store, now=later)]


def test_the_label_set_is_bounded_and_odd_characters_are_escaped(
    http, store, tmp_path, monkeypatch
):
    monkeypatch.setattr(prometheus, "MAX_RUNNING", 3)
    evil_name = 'x"} rlvr_injected 1\n# TYPE evil gauge\\' + "n" * 200
    evil_owner = 'o"w\\n\ner{job="other"}'
    ids = []
    for i in range(5):
        job = new_job(store, tmp_path, f"{i}{evil_name}", owner=evil_owner)
        store.set_status(job, "running", step=i)
        ids.append(job)
    page = scrape(http)
    assert "rlvr_injected" not in page and "evil" not in page
    jobs = [lab for lab, _ in page["rlvr_job_step"] if lab["owner"].startswith("o")]
    assert len(jobs) == 3  # the newest MAX_RUNNING running jobs only
    assert {lab["job"] for lab in jobs} == set(ids[2:])
    for lab in jobs:
        assert lab["owner"] == evil_owner  # read back exactly: escaped, not cut or injected
        assert len(lab["name"]) == prometheus.MAX_LABEL
        assert lab["name"][1:].startswith(evil_name[:20]) and set(lab) == {"job", "name", "owner"}


@pytest.fixture(scope="module")
def secured(settings, tmp_path_factory):
    """A service with tokens on: an admin, a user, and a scrape-only RLVR_METRICS_TOKEN."""
    tmp = tmp_path_factory.mktemp("secured")
    tokens = tmp / "tokens.yaml"
    tokens.write_text(f"{ALICE}: {{user: alice, role: user}}\n")
    app = create_app(
        settings.model_copy(
            update={
                "db_url": f"sqlite:///{tmp / 'rlvr.db'}",
                "api_token": ADMIN,
                "tokens_file": tokens,
                "metrics_token": SCRAPER,
            }  # fmt: skip
        ),
        start_runner=False,
    )
    with BackgroundServer(app) as srv:
        yield srv


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": f"Bearer {ALICE}"},  # a user: the labels name everyone's jobs
        {"Authorization": "Bearer scrape-token-012345678"},  # a prefix of the scrape token
        {"Authorization": f"Basic {SCRAPER}"},
        {"Authorization": "Bearer"},
    ],
)
def test_an_unauthenticated_scrape_is_refused_when_tokens_are_on(secured, headers):
    r = httpx.get(f"{secured.url}/metrics", headers=headers)
    assert r.status_code == 401 and "RLVR_METRICS_TOKEN" in r.json()["detail"]
    assert "rlvr_jobs" not in r.text


def test_the_scrape_token_opens_metrics_and_nothing_else(secured):
    with httpx.Client(base_url=secured.url, headers={"Authorization": f"Bearer {SCRAPER}"}) as c:
        assert "rlvr_jobs" in scrape(c)
        assert scrape(c, headers={"Host": "10.0.0.7:8000"})  # scraped by the pod's address
        assert c.get("/v1/jobs").status_code == 401
    r = httpx.get(f"{secured.url}/metrics", headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200


def test_the_metrics_token_is_a_real_secret():
    with pytest.raises(ValueError, match="metrics_token"):
        Settings(metrics_token="short")


# -- deploy/ ---------------------------------------------------------------------------------
def test_the_scrape_config_targets_the_service_with_the_token_file():
    config = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "rlvr"]
    assert job["metrics_path"] == "/metrics"
    assert job["authorization"]["type"] == "Bearer" and "credentials_file" in job["authorization"]
    assert all(":" in t for sc in job["static_configs"] for t in sc["targets"])


def test_the_grafana_dashboard_charts_series_the_service_exports(http):
    board = json.loads((REPO / "deploy/grafana/rlvr-dashboard.json").read_text())
    assert board["title"] and board["schemaVersion"] >= 30 and board["uid"]
    exported = set(scrape(http)) | {"rlvr_http_requests_total"}
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels) >= 4
    for panel in panels:
        for target in panel["targets"]:
            names = {w for w in _words(target["expr"]) if w.startswith("rlvr_")}
            assert names and names <= exported, (panel["title"], names - exported)


def _words(expr: str) -> list[str]:
    import re

    return re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr)
