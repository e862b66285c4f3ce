"""Sharded learners (algorithm.sharding: fsdp): the spec's checks, the filler rows that give
every learner the same passes, the per-layer LoRA merge of gathered weights, the plan's
memory, and on two gloo learners: the same update as one unsharded learner with half the
state each, and a sharded checkpoint that resumes exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlvr.config import JobSpec
from rlvr.rollout.base import SamplingConfig
from rlvr.rollout.hf import HFEngine, HFEngineConfig
from rlvr.train.batch import make_train_batch, slice_batch
from rlvr.train.fsdp import SHARDED_DIR, gathered_weights, pad_rows
from rlvr.train.learner import Learner, LearnerConfig
from rlvr.train.update import UpdateConfig, gradient_step

LORA = {"rank": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}


@pytest.fixture(scope="module")
def batch(random_model_dir):
    """15 sequences (odd: two learners need a filler row), advantages of both signs."""
    engine = HFEngine(HFEngineConfig(model=str(random_model_dir)))
    tok = engine.tokenizer
    texts = [
        f"<|im_start|>user\nWhat is {i} + 4?<|im_end|>\n<|im_start|>assistant\n" for i in range(4)
    ]
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    comps = engine.generate(prompts, SamplingConfig(n=4, max_new_tokens=8, temperature=0.8, seed=1))
    adv = np.array([1.0 if i % 3 else -1.0 for i in range(len(comps))], dtype=np.float32)
    return slice_batch(make_train_batch(prompts, comps, adv, 0), 0, 15)


def _config(model_dir, **kw):
    base = dict(model_path=str(model_dir), temperature=0.8, gen_budget=8, lr=1e-3,
                micro_batch_size=4, call_timeout_s=300, num_cpus_per_learner=0)  # fmt: skip
    base.update(kw)
    return LearnerConfig(**base)


# -- the spec ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("algorithm", "message"),
    [({"sharding": "fsdp", "num_learners": 1}, "num_learners >= 2"),
     ({"sharding": "fsdp", "num_learners": 2, "micro_batch_tokens": 4096}, "micro_batch_size"),
     ({"sharding": "zero3", "num_learners": 2}, "sharding")],
)  # fmt: skip
def test_the_spec_refuses_sharding_it_cannot_run(algorithm, message):
    with pytest.raises(ValueError, match="algorithm.sharding") as err:
        JobSpec.model_validate({"algorithm": algorithm})
    assert message in str(err.value)


def test_the_learner_refuses_fsdp_without_a_group(random_model_dir):
    with pytest.raises(
        ValueError, match=r"algorithm\.sharding=fsdp .* algorithm\.num_learners >= 2"
    ):
        Learner(_config(random_model_dir, sharding="fsdp", num_learners=0))


def test_the_plan_gives_each_sharded_learner_half_the_state():
    from rlvr.plan import cluster_from_args, make_plan

    def learner_bytes(sharding):
        spec = JobSpec.model_validate(
            {"model": {"path": "Qwen/Qwen2.5-0.5B-Instruct"},
             "algorithm": {"num_learners": 2, "sharding": sharding}}
        )  # fmt: skip
        plan = make_plan(spec, cluster_from_args(4, 80))
        return next(a.memory_bytes for a in plan.actors if a.role == "learner")

    none, fsdp = learner_bytes("none"), learner_bytes("fsdp")
    for part in ("gradients", "optimizer"):
        assert fsdp[part] == pytest.approx(none[part] / 2, rel=1e-6), part


# -- filler rows ---------------------------------------------------------------------------------
def test_filler_rows_change_neither_the_loss_nor_the_gradient(random_model_dir, batch):
    from rlvr.models.causal_lm import PolicyModel

    padded, filler_tokens = pad_rows(batch, 4)
    assert len(padded["advantages"]) == 16 and filler_tokens > 0
    assert padded["response_mask"][15].sum() == 0 and padded["advantages"][15] == 0
    assert pad_rows(padded, 4)[1] == 0  # already divisible: unchanged

    hp = UpdateConfig(micro_batch_size=4, gen_budget=8)
    total_tokens, total_seqs = float(batch["response_mask"].sum()), 15.0
    stats = []
    for b in (batch, padded):
        model = PolicyModel(str(random_model_dir), temperature=0.8)
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        tensors = {k: torch.as_tensor(v) for k, v in b.items()}
        stats.append(gradient_step(model, opt, tensors, hp, total_tokens=total_tokens,
                                   total_seqs=total_seqs))  # fmt: skip
    plain, filled = stats
    assert filled.batch_loss == pytest.approx(plain.batch_loss, rel=1e-5)
    assert filled.grad_norm == pytest.approx(plain.grad_norm, rel=1e-5)
    assert filled.tokens == plain.tokens and filled.entropy == pytest.approx(
        plain.entropy, rel=1e-5
    )
    assert filled.input_tokens == plain.input_tokens + filler_tokens


# -- gathered weights under LoRA -------------------------------------------------------------------
def test_gathered_lora_weights_are_merged_as_the_unsharded_export(random_model_dir):
    from rlvr.models.causal_lm import PolicyModel, merged_state_dict

    torch.manual_seed(0)
    model = PolicyModel(str(random_model_dir), lora=LORA)
    with torch.no_grad():  # B starts at zero: give the adapters a delta to merge
        for name, p in model.lm.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.1)
    want = merged_state_dict(model.lm)
    got = dict(gathered_weights(model.lm))
    assert sorted(got) == sorted(want)
    for k, v in want.items():
        assert torch.allclose(got[k], v, atol=1e-6), k
    adapted = dict(gathered_weights(model.lm, adapted_only=True))
    assert sorted(adapted) == sorted(merged_state_dict(model.lm, adapted_only=True))
    assert any("q_proj" in k for k in adapted) and not any("mlp" in k for k in adapted)


# -- two gloo learners -----------------------------------------------------------------------------
@pytest.mark.slow
def test_fsdp_learners_make_the_unsharded_update_with_half_the_state_each(
    ray_cluster, random_model_dir, batch
):
    base = HFEngine(HFEngineConfig(model=str(random_model_dir))).model.state_dict()
    results = []
    for cfg in (
        _config(random_model_dir),
        _config(random_model_dir, num_learners=2, sharding="fsdp"),
    ):
        learner = Learner(cfg)
        try:
            before = learner.state_dict()
            metrics = learner.update(batch, step=1)
            results.append((before, metrics, learner.state_dict(), learner.state_bytes()))
        finally:
            learner.shutdown()
    (b1, m1, s1, bytes1), (b2, m2, s2, bytes2) = results
    # Gathered from the shards: exactly the unsharded weights (HF names, tied ones too).
    assert sorted(b2) == sorted(b1)
    assert all(torch.equal(b2[k], b1[k]) for k in b1)
    # One update on the same batch (15 rows: one filler row): the same loss and gradient...
    for k in ("loss", "grad_norm", "entropy", "pg_loss"):
        assert m2[k] == pytest.approx(m1[k], rel=1e-5), k
    assert m2["learner/tokens"] == m1["learner/tokens"]
    # ...and the same step (Adam's first step is ~lr*sign(grad): a gradient that rounds to the
    # other sign moves by 2*lr, so a few entries may differ by that much, the rest agree).
    for name in s1:
        d1, d2 = s1[name] - base[name], s2[name] - base[name]
        assert torch.allclose(d1, d2, atol=2.1e-3), name
        assert (d1 - d2).abs().mean() < 1e-5, name
    assert any(not torch.equal(s2[n], base[n]) for n in s2)
    # Each learner holds half the parameters and half the AdamW moments (rows are padded to
    # an even count, so a little more than half).
    assert len(bytes2) == 2
    for part in ("params", "optimizer"):
        for held in bytes2:
            assert 0.5 <= held[part] / bytes1[0][part] < 0.55, part


@pytest.mark.slow
def test_a_sharded_checkpoint_resumes_exactly(ray_cluster, random_model_dir, batch, tmp_path):
    from transformers import AutoModelForCausalLM

    ckpt = tmp_path / "step_1"
    ckpt.mkdir()
    learner = Learner(_config(random_model_dir, num_learners=2, sharding="fsdp"))
    try:
        learner.update(batch, step=1)
        learner.save(ckpt)
        saved = learner.state_dict()
        want = learner.update(batch, step=2), learner.state_dict()
    finally:
        learner.shutdown()
    # The consolidated HF directory is the gathered policy; the shards sit beside it.
    assert (ckpt / SHARDED_DIR).is_dir() and not (ckpt / "optimizer.pt").exists()
    exported = AutoModelForCausalLM.from_pretrained(ckpt).state_dict()
    assert all(torch.equal(exported[k], v) for k, v in saved.items())

    resumed = Learner(_config(ckpt, num_learners=2, sharding="fsdp"))
    try:
        resumed.load_optimizer(ckpt)
        got = resumed.update(batch, step=2), resumed.state_dict()
    finally:
        resumed.shutdown()
    # The same next step: loss, gradient, and (through AdamW's restored moments) weights.
    for k in ("loss", "grad_norm", "entropy"):
        assert got[0][k] == want[0][k], k
    for name, value in want[1].items():
        assert torch.equal(got[1][name], value), name


def test_mixed_precision_computes_in_bf16_on_a_gpu_with_fp32_master_and_reduction():
    from rlvr.train.fsdp import mixed_precision

    gpu = mixed_precision("auto", "cuda")  # the policy only: no GPU needed to build it
    assert (gpu.param_dtype, gpu.reduce_dtype) == (torch.bfloat16, torch.float32)
    assert mixed_precision("float32", "cuda").param_dtype is None  # fp32 asked: no cast
    cpu = mixed_precision("auto", "cpu")  # CPU: fp32 throughout, as the unsharded learner
    assert (cpu.param_dtype, cpu.reduce_dtype) == (None, None)


def test_an_unsharded_learner_refuses_a_sharded_checkpoint(random_model_dir, tmp_path):
    (tmp_path / SHARDED_DIR).mkdir()  # what sharded learners write instead of optimizer.pt
    learner = Learner(_config(random_model_dir))
    try:
        with pytest.raises(ValueError, match="algorithm.sharding=fsdp"):
            learner.load_optimizer(tmp_path)
    finally:
        learner.shutdown()
