"""The plan through the REST service, against a real local Ray head that declares 2 GPUs
(``RAY_OVERRIDE_RESOURCES``; Ray schedules by declared resources on a CPU machine):
``?dry_run=true`` returns the plan and creates nothing, a job that cannot fit is a 422
naming the field, a queued job keeps its plan (``GET /v1/jobs/{id}/plan``)."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from rlvr.api.app import create_app
from rlvr.api.server import BackgroundServer
from rlvr.api.settings import Settings
from rlvr.jobs.runner import JobRunner, LocalRayHead
from rlvr.jobs.store import JobStore
from rlvr.plan.memory import QWEN25

pytestmark = pytest.mark.slow  # a Ray head of its own: ~40 s on 2 cores


def _write_config(directory, name):
    s = QWEN25[name]
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps({
        "model_type": "qwen2", "hidden_size": s.hidden, "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads, "num_key_value_heads": s.kv_heads,
        "intermediate_size": s.intermediate, "vocab_size": s.vocab,
        "tie_word_embeddings": s.tie_embeddings,
    }))  # fmt: skip


@pytest.fixture(scope="module")
def gpu_head():
    """A Ray head declaring 2 GPUs of 80 GB (the service reads them from the Jobs API)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("RAY_OVERRIDE_RESOURCES", json.dumps({"GPU": 2}))
    mp.setenv("RLVR_GPU_MEMORY_GB", "80")
    head = LocalRayHead(num_cpus=1, object_store_mb=100)
    try:
        head.start()
        yield head
    finally:
        head.stop()
        mp.undo()


@pytest.fixture(scope="module")
def http(gpu_head, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("svc")
    models = tmp / "models"
    _write_config(models / "qwen14b", "Qwen2.5-14B")
    _write_config(models / "qwen0.5b", "Qwen2.5-0.5B")
    settings = Settings(db_url=f"sqlite:///{tmp / 'rlvr.db'}", data_roots=[tmp],
                        model_roots=[models], runs_dir=tmp / "runs")  # fmt: skip
    store = JobStore(settings.db_url)
    runner = JobRunner(store, db_url=settings.db_url, ray_address=gpu_head.address,
                       ray_token=gpu_head.token)  # fmt: skip
    # Not started: jobs stay queued (a declared GPU cannot run one); connected by hand.
    runner.client()
    app = create_app(settings, runner=runner, start_runner=False)
    with BackgroundServer(app) as srv, httpx.Client(base_url=srv.url, timeout=60) as client:
        yield client, str(models)


def _spec(models: str, model: str, **extra) -> dict:
    return {"name": "p", "model": {"path": f"{models}/{model}"},
            "data": {"train": "builtin:arithmetic?n=20", "eval": None},
            "reward": {"verifiers": [{"name": "math"}]}, **extra}  # fmt: skip


def _dry_run(client, spec) -> dict:
    """The plan, once the head's nodes have reported to the dashboard (a few seconds)."""
    deadline = time.monotonic() + 60
    while True:
        r = client.post("/v1/jobs?dry_run=true", json=spec)
        assert r.status_code == 200, r.text
        plan = r.json()
        if plan["cluster"]["source"] == "ray" or time.monotonic() > deadline:
            return plan
        time.sleep(1)


def test_dry_run_reads_the_declared_gpus_and_creates_nothing(http):
    client, models = http
    plan = _dry_run(client, _spec(models, "qwen0.5b"))
    assert plan["cluster"]["source"] == "ray"
    assert [n["gpus"] for n in plan["cluster"]["nodes"]] == [2]
    assert (plan["mode"], plan["sync"], plan["fits"]) == ("split", "nccl", True)
    assert {a["name"]: a["gpus"] for a in plan["actors"]} == {"engine-0": [0], "learner-0": [1]}
    assert client.get("/v1/jobs").json()["total"] == 0


def test_a_job_that_cannot_fit_is_refused_naming_the_field(http):
    client, models = http
    _dry_run(client, _spec(models, "qwen0.5b"))  # the cluster has reported
    r = client.post("/v1/jobs", json=_spec(models, "qwen14b", placement={"mode": "colocate"}))
    assert r.status_code == 422, r.text
    locs = [d["loc"] for d in r.json()["detail"]]
    assert ["body", "model", "lora"] in locs
    assert any("LoRA" in d["msg"] for d in r.json()["detail"])
    r = client.post("/v1/jobs", json=_spec(models, "qwen0.5b", rollout={"replicas": 3}))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "rollout", "replicas"]


def test_a_queued_job_keeps_its_plan(http):
    client, models = http
    _dry_run(client, _spec(models, "qwen0.5b"))
    r = client.post("/v1/jobs", json=_spec(models, "qwen0.5b", rollout={"replicas": 2}))
    assert r.status_code == 201, r.text
    plan = client.get(f"/v1/jobs/{r.json()['id']}/plan").json()
    assert plan["mode"] == "colocate"  # 2 engines + 1 learner on 2 GPUs
    assert (plan["actors"][2]["name"], plan["actors"][2]["gpus"]) == ("learner-0", [0])
    assert client.get("/v1/jobs/nope/plan").status_code == 404
