"""The plan on a real local Ray head that declares 4 GPUs of 80 GB (``RAY_OVERRIDE_RESOURCES``;
Ray schedules by declared resources on a CPU machine and gives each actor its GPU ids).

Through the REST service: ``?dry_run=true`` returns the plan and creates nothing, a job that
cannot fit is a 422 naming the field, a queued job keeps its plan. On Ray: actors land where
the plan says. A child process joins the head and places probes exactly as the trainer
places engines (:func:`rlvr.plan.reserve.engine_options`) and as RLlib places learners (any
bundle of the reserved learner group with room); each answers ``ray.get_gpu_ids()``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
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

CHILD = r"""
import json, sys
import ray
import torch
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
from rlvr.config import JobSpec
from rlvr.plan import cluster_from_ray, make_plan
from rlvr.plan.reserve import engine_options, reserve

ray.init(address=sys.argv[2], log_to_driver=False)

@ray.remote(num_cpus=0)
class Probe:
    def gpu_ids(self):
        return [str(i) for i in ray.get_gpu_ids()]

out = {"nodes": [n.gpus for n in cluster_from_ray(80).nodes]}
for name, spec in json.loads(sys.argv[1]).items():
    plan = make_plan(JobSpec.model_validate(spec), cluster_from_ray(80))
    res = reserve(plan, timeout_s=60)
    actors = {}
    for a in plan.actors:
        if a.role == "engine":
            opts = engine_options(plan, res, int(a.name.split("-")[1]))
        else:
            opts = {"num_gpus": a.gpu_share,
                    "scheduling_strategy": PlacementGroupSchedulingStrategy(res.learners)}
        actors[a.name] = Probe.options(**{**opts, "num_cpus": 0}).remote()
    ids = dict(zip(actors, ray.get([p.gpu_ids.remote() for p in actors.values()], timeout=60)))
    out[name] = {"mode": plan.mode, "sync": plan.sync, "ids": ids,
                 "planned": {a.name: a.gpus for a in plan.actors}}
    for p in actors.values():
        ray.kill(p)
    res.release()
out["cuda_initialized"] = torch.cuda.is_initialized()
print("RESULT " + json.dumps(out))
"""


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
    """A Ray head declaring 4 GPUs of 80 GB (the service reads them from the Jobs API)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("RAY_OVERRIDE_RESOURCES", json.dumps({"GPU": 4}))
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
    deadline = time.monotonic() + 120  # the head reports its nodes after ~10 s, more under load
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
    assert [n["gpus"] for n in plan["cluster"]["nodes"]] == [4]
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
    r = client.post("/v1/jobs", json=_spec(models, "qwen0.5b", rollout={"replicas": 5}))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "rollout", "replicas"]


def test_a_queued_job_keeps_its_plan(http):
    client, models = http
    _dry_run(client, _spec(models, "qwen0.5b"))
    r = client.post("/v1/jobs", json=_spec(models, "qwen0.5b", rollout={"replicas": 4}))
    assert r.status_code == 201, r.text
    plan = client.get(f"/v1/jobs/{r.json()['id']}/plan").json()
    assert plan["mode"] == "colocate"  # 4 engines + 1 learner on 4 GPUs
    assert (plan["actors"][4]["name"], plan["actors"][4]["gpus"]) == ("learner-0", [0])
    assert client.get("/v1/jobs/nope/plan").status_code == 404


# -- actors on the declared GPUs ---------------------------------------------------------------
SPECS = {
    "split": {"rollout": {"replicas": 2}, "algorithm": {"num_learners": 2}},
    "colocate": {"rollout": {"replicas": 4}},
    "colocate_one": {"placement": {"mode": "colocate"}},
}


@pytest.fixture(scope="module")
def placed(gpu_head):
    base = {"model": {"path": "Qwen/Qwen2.5-0.5B-Instruct"}}
    specs = {name: {**base, **s} for name, s in SPECS.items()}
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": gpu_head.token}  # fmt: skip
    env.pop("RAY_ADDRESS", None)
    args = [sys.executable, "-c", CHILD, json.dumps(specs), gpu_head.gcs_address]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=240)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads(line.removeprefix("RESULT "))


def test_the_plan_reads_the_declared_gpus_from_ray(placed):
    assert placed["nodes"] == [4]


def test_split_puts_every_engine_and_learner_on_a_gpu_of_its_own(placed):
    r = placed["split"]
    assert (r["mode"], r["sync"]) == ("split", "nccl")
    ids = [tuple(v) for v in r["ids"].values()]
    assert all(len(i) == 1 for i in ids) and len(set(ids)) == 4


def test_colocate_puts_the_learner_beside_an_engine_and_engines_apart(placed):
    r = placed["colocate"]
    assert (r["mode"], r["sync"]) == ("colocate", "cuda_ipc")
    engines = [r["ids"][f"engine-{i}"][0] for i in range(4)]
    assert len(set(engines)) == 4  # one engine per GPU, never two sharing one
    assert r["ids"]["learner-0"][0] in engines
    one = placed["colocate_one"]
    assert one["ids"]["engine-0"] == one["ids"]["learner-0"]


def test_the_driver_never_initialises_cuda(placed):
    assert placed["cuda_initialized"] is False
