"""LoRA through peft: only the adapters train; weights leave the learner merged (engines and
plain transformers load them); the KL reference is the base with adapters disabled; a
checkpoint's adapter resumes training exactly; a LoRA job runs through the real loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlvr.models.causal_lm import ADAPTER_DIR
from rlvr.rollout.base import SamplingConfig
from rlvr.rollout.hf import HFEngine, HFEngineConfig
from rlvr.train.batch import make_train_batch
from rlvr.train.learner import Learner, LearnerConfig

LORA = {"rank": 4, "alpha": 8.0, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
ADAPTED = {f"model.layers.{i}.self_attn.{m}.weight" for i in range(2) for m in ("q_proj", "v_proj")}


@pytest.fixture(scope="module")
def engine(random_model_dir):
    return HFEngine(HFEngineConfig(model=str(random_model_dir)))


@pytest.fixture(scope="module")
def base_state(engine):
    return {k: v.clone() for k, v in engine.model.state_dict().items()}


def _sample(engine, seed=0):
    tok = engine.tokenizer
    texts = [
        f"<|im_start|>user\nWhat is {i} + 4?<|im_end|>\n<|im_start|>assistant\n" for i in range(4)
    ]
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    comps = engine.generate(
        prompts, SamplingConfig(n=4, max_new_tokens=10, temperature=0.8, seed=seed)
    )
    return prompts, comps


@pytest.fixture(scope="module")
def batch(engine):
    prompts, comps = _sample(engine)
    adv = np.array([1.0 if i % 2 == 0 else -1.0 for i in range(len(comps))], dtype=np.float32)
    return make_train_batch(prompts, comps, adv, pad_id=0)


def _learner(model_dir, **kw):
    # lr 3e-3: Adam moves every adapter element by ~lr per step; at 1e-2 the random model's
    # sample logprobs overshoot (all of them fall).
    base = dict(model_path=str(model_dir), temperature=0.8, gen_budget=10, lr=3e-3, lora=LORA)
    return Learner(LearnerConfig(**{**base, **kw}))


def test_lora_trains_only_the_adapters_and_exports_merged_weights(
    random_model_dir, batch, base_state, tmp_path
):
    learner = _learner(random_model_dir)
    try:
        metrics = [learner.update(batch, step=s) for s in (1, 2, 3)]
        state = learner.state_dict()
        synced = learner.state_dict(trainable_only=True)
        learner.save(tmp_path)
    finally:
        learner.shutdown()
    for m in metrics:
        assert all(np.isfinite(m[k]) for k in ("loss", "grad_norm", "entropy", "mismatch/kl"))
    assert metrics[0]["grad_norm"] > 0
    # Plain HF names, the base model's keys; only the adapted layers moved.
    assert set(state) == set(base_state)
    for name, value in state.items():
        if name in ADAPTED:
            assert not torch.allclose(value, base_state[name]), name
        else:
            assert torch.equal(value, base_state[name]), name
    assert set(synced) == ADAPTED  # the weight sync sends only what changed
    # The optimizer holds the adapters only: lora_A and lora_B of 4 adapted layers.
    opt = torch.load(tmp_path / "optimizer.pt", weights_only=True)
    assert len(opt["state"]) == 8
    assert sorted(len(s["exp_avg"].shape) for s in opt["state"].values()) == [2] * 8


def test_lora_checkpoint_loads_with_plain_transformers_and_resumes_the_adapter(
    random_model_dir, batch, tmp_path
):
    from transformers import AutoModelForCausalLM

    learner = _learner(random_model_dir)
    try:
        for s in (1, 2):
            learner.update(batch, step=s)
        learner.save(tmp_path)
        saved = learner.state_dict()
        next_metrics = learner.update(batch, step=3)
        next_state = learner.state_dict()
    finally:
        learner.shutdown()
    assert (tmp_path / ADAPTER_DIR / "adapter_config.json").is_file()
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)  # no peft involved
    assert type(reloaded).__name__ == "Qwen2ForCausalLM"
    own = reloaded.state_dict()
    for name, value in saved.items():
        assert torch.equal(own[name], value), name

    # Resume: the base model + the checkpoint's adapter + its optimizer state continue
    # exactly where the first learner went on.
    resumed = _learner(random_model_dir, lora_adapter_path=str(tmp_path / ADAPTER_DIR))
    try:
        resumed.load_optimizer(tmp_path)
        assert all(torch.equal(resumed.state_dict()[k], v) for k, v in saved.items())
        again = resumed.update(batch, step=3)
        again_state = resumed.state_dict()
    finally:
        resumed.shutdown()
    assert again["grad_norm"] == pytest.approx(next_metrics["grad_norm"], rel=1e-6)
    for name, value in next_state.items():
        assert torch.allclose(again_state[name], value, atol=1e-6), name


def _sequence_logprobs(engine, prompts, comps):
    out = []
    for c in comps:
        ids = torch.tensor([prompts[c.prompt_index] + c.token_ids])
        with torch.no_grad():
            logits = engine.model(input_ids=ids).logits[0, -len(c.token_ids) - 1 : -1] / 0.8
        lp = torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(c.token_ids)[:, None])
        out.append(float(lp.sum()))
    return np.array(out)


def test_lora_weights_synced_to_the_hf_engine_change_its_outputs(random_model_dir, batch):
    engine = HFEngine(HFEngineConfig(model=str(random_model_dir)))  # its own: weights change
    prompts, comps = _sample(engine, seed=1)
    adv = batch["advantages"]
    before = _sequence_logprobs(engine, prompts, comps)
    learner = _learner(random_model_dir)
    try:
        train = make_train_batch(prompts, comps, adv, pad_id=0)
        for s in (1, 2, 3):
            learner.update(train, step=s)
        engine.load_weights(learner.state_dict(trainable_only=True), version=3)
        after = _sequence_logprobs(engine, prompts, comps)
        # The engine now samples from exactly the learner's (adapted) policy.
        fresh_prompts, fresh = _sample(engine, seed=2)
        fresh_batch = make_train_batch(fresh_prompts, fresh, adv, pad_id=0)
        check = learner.update(fresh_batch, step=4)
    finally:
        learner.shutdown()
    delta = after - before
    assert delta[adv > 0].mean() > 0 > delta[adv < 0].mean()
    assert engine.weights_version() == 3
    assert check["mismatch/kl"] < 1e-6


def test_lora_kl_reference_is_the_base_model_with_adapters_disabled(random_model_dir, batch):
    learner = _learner(random_model_dir, kl_coef=0.5, ref_model_path=str(random_model_dir))
    try:
        first = learner.update(batch, step=1)
        second = learner.update(batch, step=2)
    finally:
        learner.shutdown()
    assert first["kl"] == pytest.approx(0.0, abs=1e-7)  # LoRA B starts at 0: policy == base
    assert second["kl"] > 0


def test_lora_with_activation_checkpointing_gets_the_same_gradient(random_model_dir, batch):
    results = []
    for checkpointing in (False, True):
        learner = _learner(random_model_dir, gradient_checkpointing=checkpointing)
        try:
            learner.update(batch, step=1)  # B = 0 at first: the adapters' A gets no gradient
            results.append(learner.update(batch, step=2))
        finally:
            learner.shutdown()
    plain, ckpt = results
    assert plain["grad_norm"] > 0
    assert ckpt["grad_norm"] == pytest.approx(plain["grad_norm"], rel=1e-4)


def test_lora_target_modules_the_model_lacks_are_an_error_naming_the_field(random_model_dir):
    with pytest.raises(ValueError, match=r"model\.lora\.target_modules"):
        _learner(random_model_dir, lora={**LORA, "target_modules": ["c_attn"]})


@pytest.mark.slow
def test_a_lora_job_trains_checkpoints_and_resumes_through_the_loop(
    ray_cluster, random_model_dir, tmp_path
):
    from transformers import AutoModelForCausalLM

    from rlvr.config import JobSpec
    from rlvr.train import run
    from rlvr.train.checkpoint import list_checkpoints
    from rlvr.train.rundir import read_jsonl

    def spec(max_steps):
        return JobSpec.model_validate(
            {
                "name": "lora-loop",
                "model": {"path": str(random_model_dir), "lora": {"rank": 4}},
                "data": {"train": "builtin:arithmetic?n=24", "eval": None},
                "reward": {"verifiers": [{"name": "math"}], "workers": 1},
                "algorithm": {
                    "group_size": 2,
                    "prompts_per_step": 2,
                    "lr": 1e-2,
                    "max_steps": max_steps,
                    "kl_coef": 0.1,
                },
                "rollout": {"max_new_tokens": 8},
                "checkpoint": {"every": 2},
                "eval": {"at_start": False},
            }
        )

    first = run(spec(2), tmp_path, actor_cpus=0)
    resumed = run(spec(3), tmp_path, resume=True, actor_cpus=0)
    assert first.status == resumed.status == "succeeded" and resumed.step == 3
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3]
    for r in records:
        assert np.isfinite(r["loss"]) and np.isfinite(r["kl"]) and r["learner/tokens"] > 0
        assert r["throughput/learn_tok_s"] > 0
    steps = [s for s, _ in list_checkpoints(tmp_path)]
    assert steps == [2, 3]
    last = list_checkpoints(tmp_path)[-1][1]
    assert (last / ADAPTER_DIR / "adapter_model.safetensors").is_file()
    # A random model earns no reward, so advantages are 0 and nothing moves here (training
    # itself is tested above); the checkpoint is the merged model, loadable without peft.
    model = AutoModelForCausalLM.from_pretrained(last)
    base = AutoModelForCausalLM.from_pretrained(random_model_dir).state_dict()
    assert all(torch.equal(v, base[k]) for k, v in model.state_dict().items())
