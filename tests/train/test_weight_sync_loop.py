"""Step 5 of the loop: the learner sends its weights to the engines itself, by the method the
placement plan chose (falling back to the object store where the devices do not allow it)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlvr.rollout.base import SamplingConfig
from rlvr.rollout.hf import HFEngine, HFEngineConfig, HFRollout
from rlvr.rollout.weight_sync import (
    SYNC_METHOD_CODES,
    WeightSender,
    choose_method,
    method_problem,
)
from rlvr.train.batch import make_train_batch
from rlvr.train.learner import Learner, LearnerConfig


def test_each_layout_gets_its_method_and_an_impossible_one_is_named():
    same, other = "GPU-aaaa", "GPU-bbbb"
    assert choose_method(same, [same, same]) == "cuda_ipc"  # colocate
    assert choose_method(same, [other, other]) == "nccl"  # split
    assert choose_method(None, [None]) == "object_store"  # CPU
    assert choose_method(same, [same, other]) == "object_store"  # mixed: the fallback
    assert method_problem("cuda_ipc", same, [same]) is None
    assert "same GPU" in method_problem("cuda_ipc", same, [other])
    assert method_problem("nccl", same, [other]) is None
    assert "needs CUDA" in method_problem("nccl", None, [None])
    assert method_problem("object_store", None, [None]) is None
    assert set(SYNC_METHOD_CODES) == {"object_store", "cuda_ipc", "nccl"}


def test_a_gpu_method_on_cpu_engines_falls_back_to_the_object_store(ray_cluster, random_model_dir):
    rollout = HFRollout(
        HFEngineConfig(model=str(random_model_dir)), replicas=1, num_cpus=0, call_timeout_s=120
    )
    try:
        engines = rollout.replicas.engines
        with pytest.raises(ValueError, match="needs CUDA"):
            WeightSender(engines, "nccl", timeout_s=60)
        assert WeightSender(engines, "nccl", timeout_s=60, fallback=True).method == "object_store"
        assert WeightSender(engines, "cuda_ipc", timeout_s=60, fallback=True).method == (
            "object_store"
        )
    finally:
        rollout.shutdown()


@pytest.mark.slow
def test_a_learner_actor_pushes_its_weights_to_the_engines_without_the_driver(
    ray_cluster, random_model_dir, monkeypatch
):
    """num_learners=1: after an update the learner actor puts its weights in the object store
    and the engines load them; the driver puts nothing (its ray.put is disabled)."""
    import ray

    local = HFEngine(HFEngineConfig(model=str(random_model_dir)))
    tok = local.tokenizer
    prompts = [tok(f"What is {i} + 2?", add_special_tokens=False)["input_ids"] for i in range(2)]
    comps = local.generate(prompts, SamplingConfig(n=4, max_new_tokens=6, temperature=0.8, seed=0))
    adv = np.array([1.0 if i % 2 else -1.0 for i in range(len(comps))], dtype=np.float32)
    config = LearnerConfig(
        model_path=str(random_model_dir), temperature=0.8, gen_budget=6, lr=1e-2,
        micro_batch_size=16, num_learners=1, num_cpus_per_learner=0, call_timeout_s=300,
    )  # fmt: skip
    rollout = HFRollout(
        HFEngineConfig(model=str(random_model_dir)), replicas=1, num_cpus=0, call_timeout_s=120
    )
    learner = Learner(config)
    try:
        learner.update(make_train_batch(prompts, comps, adv, local.pad_id), step=1)
        learned = learner.state_dict()
        assert any(not torch.equal(learned[k], v) for k, v in local.model.state_dict().items())

        def no_put(*args, **kwargs):
            raise AssertionError("the driver must not put the weights in the object store")

        monkeypatch.setattr(ray, "put", no_put)
        stats = learner.push_weights(rollout.replicas.engines, "nccl", version=1)
        monkeypatch.undo()
        assert stats["method"] == "object_store"  # the plan's nccl is impossible on CPU
        assert stats["bytes"] >= sum(v.numel() * v.element_size() for v in learned.values()) / 2
        assert rollout.weights_version() == 1
        # The engines now answer exactly as a local engine holding the learner's weights.
        local.load_weights(learned, version=1)
        greedy = SamplingConfig(n=1, max_new_tokens=6, temperature=0.0)
        got, want = rollout.generate(prompts, greedy), local.generate(prompts, greedy)
        assert [c.token_ids for c in got] == [c.token_ids for c in want]
        flat = [lp for c in got for lp in c.logprobs]
        assert flat == pytest.approx([lp for c in want for lp in c.logprobs], abs=1e-5)
        # A second sync reuses the learner's sender and advances the version.
        assert learner.push_weights(rollout.replicas.engines, "nccl", version=2)["bytes"] > 0
        assert rollout.weights_version() == 2
    finally:
        learner.shutdown()
        rollout.shutdown()


def test_under_lora_only_the_adapted_layers_move(ray_cluster, random_model_dir):
    """The local learner (num_learners=0) pushes the merged adapted layers alone: sync/bytes
    is their size, and the engine's other weights stay the base model's."""
    lora = {"rank": 4, "alpha": 8.0, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    learner = Learner(
        LearnerConfig(model_path=str(random_model_dir), temperature=0.8, gen_budget=6, lora=lora)
    )
    rollout = HFRollout(
        HFEngineConfig(model=str(random_model_dir)), replicas=1, num_cpus=0, call_timeout_s=120
    )
    try:
        adapted = learner.state_dict(trainable_only=True)
        assert adapted and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in adapted)
        stats = learner.push_weights(rollout.replicas.engines, "cuda_ipc", version=5)
        assert stats["method"] == "object_store"
        assert stats["bytes"] == sum(-(-v.nbytes // 256) * 256 for v in adapted.values())
        assert stats["bytes"] < sum(v.nbytes for v in learner.state_dict().values()) / 2
        assert rollout.weights_version() == 5
    finally:
        learner.shutdown()
        rollout.shutdown()
