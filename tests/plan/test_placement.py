"""The placement plan: layout per GPU count, sync per layout, actors per node, refusals,
and a JSON that does not change shape."""

from __future__ import annotations

import json

import pytest

from rlvr.config import JobSpec
from rlvr.plan import Cluster, Node, cluster_from_args, make_plan
from rlvr.plan.memory import ModelShape

SMALL = ModelShape(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, vocab=256,
                   tie_embeddings=True)  # fmt: skip


def _spec(**sections) -> JobSpec:
    return JobSpec.model_validate({"model": {"path": "Qwen/Qwen2.5-0.5B-Instruct"}, **sections})


@pytest.mark.parametrize(
    ("gpus", "mode", "sync"),
    [(0, "cpu", "object_store"), (1, "colocate", "cuda_ipc"), (2, "split", "nccl"),
     (4, "split", "nccl")],
)  # fmt: skip
def test_auto_layout_and_sync_method_per_gpu_count(gpus, mode, sync):
    plan = make_plan(_spec(), cluster_from_args(gpus, 80))
    assert (plan.mode, plan.sync, plan.fits) == (mode, sync, True)
    assert plan.engine == ("vllm" if gpus else "hf")


def test_four_gpus_with_two_replicas_and_two_learners_split_two_and_two():
    spec = _spec(rollout={"replicas": 2}, algorithm={"num_learners": 2})
    plan = make_plan(spec, cluster_from_args(4, 80))
    where = {a.name: (a.node, a.gpus, a.gpu_share) for a in plan.actors}
    assert where == {"engine-0": (0, [0], 1.0), "engine-1": (0, [1], 1.0),
                     "learner-0": (0, [2], 1.0), "learner-1": (0, [3], 1.0)}  # fmt: skip


def test_four_replicas_on_four_gpus_colocate_with_the_learner():
    plan = make_plan(_spec(rollout={"replicas": 4}), cluster_from_args(4, 80))
    assert plan.mode == "colocate"
    gpu0 = next(g for g in plan.gpus if g["gpu"] == 0)
    assert gpu0["actors"] == ["engine-0", "learner-0"]
    assert plan.actor("engine-0").gpu_share + plan.actor("learner-0").gpu_share == 1.0
    assert plan.actor("engine-1").gpu_share == 1.0  # alone on its GPU


def test_forced_colocate_on_two_gpus_shares_a_gpu():
    plan = make_plan(_spec(placement={"mode": "colocate"}), cluster_from_args(2, 80))
    assert plan.mode == "colocate" and plan.sync == "cuda_ipc"
    assert plan.actor("engine-0").gpus == plan.actor("learner-0").gpus == [0]


def test_hf_engine_on_gpus_syncs_through_the_object_store():
    plan = make_plan(_spec(rollout={"engine": "hf"}), cluster_from_args(2, 80))
    assert (plan.mode, plan.sync) == ("split", "object_store")


def test_cpu_cluster_keeps_the_learner_in_the_driver_unless_asked():
    plan = make_plan(_spec(), cluster_from_args(0))
    assert plan.num_learners == 0 and plan.actors[-1].name == "learner-driver"
    plan = make_plan(_spec(algorithm={"num_learners": 2}), cluster_from_args(0))
    assert [a.name for a in plan.actors] == ["engine-0", "learner-0", "learner-1"]


def test_a_cpu_run_with_one_replica_and_its_learner_in_the_driver_runs_its_engine_there():
    # on a thread of its own, so that evals run beside the learner
    sync_plan = make_plan(_spec(), cluster_from_args(0))
    assert sync_plan.engines_in_driver and sync_plan.engine_thread
    assert sync_plan.engines_work_beside_learner
    # off-policy too: the engine's rollouts then run beside the learner as well
    async_run = _spec(algorithm={"max_staleness": 1})
    assert make_plan(async_run, cluster_from_args(0)).engine_thread
    for apart in ({"rollout": {"replicas": 2}}, {"algorithm": {"num_learners": 1}},
                  {"placement": {"mode": "split"}},
                  {"algorithm": {"max_staleness": 1}, "placement": {"mode": "split"}}):  # fmt: skip
        assert not make_plan(_spec(**apart), cluster_from_args(0)).engines_in_driver, apart
    # GPU layouts never do it (their engine actors always work beside the learner)
    gpu_plan = make_plan(_spec(), cluster_from_args(1, 80))
    assert not gpu_plan.engines_in_driver and gpu_plan.engines_work_beside_learner
    # nor an asynchronous run whose learner draws random numbers (LoRA dropout) beside it
    dropout = {"model": {"path": "Qwen/Qwen2.5-0.5B-Instruct", "lora": {"dropout": 0.05}}}
    # synchronous: in the driver, working between the learner's steps (evals too)
    sync_dropout = make_plan(_spec(**dropout), cluster_from_args(0))
    assert sync_dropout.engines_in_driver and not sync_dropout.engine_thread
    assert not sync_dropout.engines_work_beside_learner
    async_dropout = _spec(**dropout, algorithm={"max_staleness": 1})
    assert not make_plan(async_dropout, cluster_from_args(0)).engines_in_driver
    refused = make_plan(
        _spec(**dropout, algorithm={"max_staleness": 1}, placement={"mode": "colocate"}),
        cluster_from_args(0),
    )
    assert [p["loc"] for p in refused.problems] == [["placement", "mode"]]
    assert "model.lora.dropout: 0" in refused.problems[0]["msg"]


def test_colocate_on_cpus_with_two_replicas_is_refused_naming_the_mode_and_the_fix():
    spec = _spec(rollout={"replicas": 2}, placement={"mode": "colocate"})
    plan = make_plan(spec, cluster_from_args(0))
    assert [p["loc"] for p in plan.problems] == [["placement", "mode"]]
    assert "rollout.replicas: 1" in plan.problems[0]["msg"]
    assert "placement.mode: split" in plan.problems[0]["msg"]


def test_a_tensor_parallel_engine_keeps_its_gpus_on_one_node():
    two_by_two = Cluster((Node(2, 80 * 10**9), Node(2, 80 * 10**9)))
    spec = _spec(rollout={"tensor_parallel_size": 2, "replicas": 1},
                 placement={"mode": "split"})  # fmt: skip
    plan = make_plan(spec, two_by_two)
    assert (plan.actor("engine-0").node, plan.actor("engine-0").gpus) == (0, [0, 1])
    assert plan.actor("learner-0").node == 1
    assert [len(g["bundles"]) for g in plan.placement_groups()] == [2, 1]
    three = make_plan(_spec(rollout={"tensor_parallel_size": 3}), two_by_two)
    assert [p["loc"] for p in three.problems] == [["rollout", "tensor_parallel_size"]]


def test_too_many_replicas_for_the_gpus_names_replicas_and_the_fix():
    plan = make_plan(_spec(rollout={"replicas": 3}), cluster_from_args(2, 80))
    assert not plan.fits
    assert plan.problems[0]["loc"] == ["rollout", "replicas"]
    assert "fewer rollout.replicas" in plan.problems[0]["msg"]


def test_vllm_on_a_cpu_cluster_is_refused_naming_the_engine():
    plan = make_plan(_spec(rollout={"engine": "vllm"}), cluster_from_args(0))
    assert plan.problems[0]["loc"] == ["rollout", "engine"]


def test_full_fine_tuning_of_7b_on_one_gpu_asks_for_lora_and_lora_fits():
    spec = _spec(model={"path": "Qwen/Qwen2.5-7B-Instruct", "gradient_checkpointing": True},
                 algorithm={"micro_batch_tokens": 4096})  # fmt: skip
    plan = make_plan(spec, cluster_from_args(1, 80))
    assert [p["loc"] for p in plan.problems] == [["model", "lora"]]
    assert "LoRA" in plan.problems[0]["msg"]
    spec.model.lora = {"rank": 16}
    assert make_plan(spec, cluster_from_args(1, 80)).fits


def test_a_large_micro_batch_is_named_when_the_state_fits():
    spec = _spec(algorithm={"micro_batch_tokens": 1_000_000})
    plan = make_plan(spec, cluster_from_args(2, 80))
    assert plan.problems[0]["loc"] == ["algorithm", "micro_batch_tokens"]
    assert "gradient_checkpointing" in plan.problems[0]["msg"]


def test_a_kv_cache_without_room_for_one_sequence_names_gpu_memory_utilization():
    spec = _spec(model={"path": "Qwen/Qwen2.5-7B"}, rollout={"gpu_memory_utilization": 0.35},
                 placement={"mode": "split"})  # fmt: skip
    plan = make_plan(spec, cluster_from_args(2, 40))
    assert ["rollout", "gpu_memory_utilization"] in [p["loc"] for p in plan.problems]


def test_placement_gpu_counts_must_match_the_spec():
    plan = make_plan(_spec(placement={"rollout_gpus": 2}), cluster_from_args(4, 80))
    assert plan.problems[0]["loc"] == ["placement", "rollout_gpus"]


def test_plan_json_is_stable_and_matches_first_principles():
    spec = JobSpec.model_validate({
        "model": {"path": "unused"},
        "data": {"max_prompt_tokens": 64},
        "algorithm": {"micro_batch_size": 4, "prompts_per_step": 2, "group_size": 4},
        "rollout": {"max_new_tokens": 32, "gpu_memory_utilization": 0.5},
    })  # fmt: skip
    plan = make_plan(spec, cluster_from_args(2, 24), shape=SMALL)
    # SMALL: 4 heads of 16, 2 kv heads; q/k/v biased; tied embeddings.
    per_layer = (64 * 64 + 64) + 2 * (64 * 32 + 32) + 64 * 64 + 3 * 64 * 128 + 2 * 64
    params = 256 * 64 + 2 * per_layer + 64
    assert params == 90688
    tokens = 4 * (64 + 32)  # micro_batch_size x (prompt + completion)
    learner = {
        "weights": 6 * params, "gradients": 4 * params, "optimizer": 8 * params,
        "reference": 0, "activations": tokens * (2 * 64 * 34 + 256 * 8), "overhead": 2**30,
    }  # fmt: skip
    learner["total"] = sum(learner.values())
    budget = 12 * 10**9  # 0.5 of 24 GB
    kv = budget - 2 * params - 2 * 2**30
    engine = {"budget": budget, "weights": 2 * params, "overhead": 2 * 2**30, "kv_cache": kv,
              "kv_tokens": kv // (2 * 2 * 2 * 16 * 2), "max_seq_tokens": 96,
              "total": budget}  # fmt: skip
    expected = {
        "mode": "split", "engine": "vllm", "sync": "nccl", "num_learners": 1,
        "tensor_parallel_size": 1, "fits": True, "problems": [], "notes": [],
        "engines_in_driver": False, "engine_thread": False,
        "cluster": {"source": "given",
                    "nodes": [{"gpus": 2, "gpu_memory_bytes": 24 * 10**9, "cpus": 1.0}]},
        "model": {"params": params, "trainable_params": params},
        "actors": [
            {"name": "engine-0", "role": "engine", "node": 0, "gpus": [0], "gpu_share": 1.0,
             "memory_bytes": engine},
            {"name": "learner-0", "role": "learner", "node": 0, "gpus": [1], "gpu_share": 1.0,
             "memory_bytes": learner},
        ],
        "gpus": [
            {"node": 0, "gpu": 0, "actors": ["engine-0"], "used_bytes": budget,
             "capacity_bytes": 24 * 10**9},
            {"node": 0, "gpu": 1, "actors": ["learner-0"], "used_bytes": learner["total"],
             "capacity_bytes": 24 * 10**9},
        ],
        "placement_groups": [{"node": 0, "strategy": "STRICT_PACK",
                              "bundles": [{"GPU": 1.0}, {"GPU": 1.0}]}],
    }  # fmt: skip
    assert plan.to_dict() == expected
    text = plan.to_json()
    assert text == json.dumps(expected, sort_keys=True, indent=1)
    assert text == make_plan(spec, cluster_from_args(2, 24), shape=SMALL).to_json()
