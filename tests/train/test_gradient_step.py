"""The gradient step as a plain function (no RLlib): a PolicyModel, AdamW and a batch in,
StepStats out; a non-finite gradient is skipped and counted; the RLlib learner reports
exactly what the function computes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rlvr.models.causal_lm import PolicyModel
from rlvr.rollout.base import Completion
from rlvr.train.batch import make_train_batch
from rlvr.train.update import LEARNER_METRICS, UpdateConfig, gradient_step

HP = dict(micro_batch_size=4, gen_budget=12)


@pytest.fixture(scope="module")
def batch():
    """8 sequences of mixed prompt and response lengths, advantages of both signs."""
    rng = np.random.default_rng(2)
    prompts = [rng.integers(7, 60, int(n)).tolist() for n in (3, 9, 5, 14)]
    comps = []
    for i in range(8):
        n = int(rng.integers(1, 13))
        tokens = rng.integers(7, 60, n).tolist()
        comps.append(Completion(i // 2, tokens, "", (-rng.random(n) * 3).tolist(), "stop"))
    adv = np.array([1.0, -1.0, 0.5, -0.2, 2.0, -0.7, 0.3, -1.5], dtype=np.float32)
    return make_train_batch(prompts, comps, adv, pad_id=0)


def _step(model_dir, batch, **hp):
    model = PolicyModel(str(model_dir), temperature=0.8)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    before = {k: v.clone() for k, v in model.lm.state_dict().items()}
    tensors = {k: torch.as_tensor(v) for k, v in batch.items()}
    stats = gradient_step(model, optimizer, tensors, UpdateConfig(**{**HP, **hp}))
    return stats, before, model.lm.state_dict()


def test_gradient_step_reports_every_learner_metric_and_moves_the_weights(random_model_dir, batch):
    stats, before, after = _step(random_model_dir, batch)
    m = stats.metrics()
    assert tuple(m) == LEARNER_METRICS
    assert m["learner/skipped_steps"] == 0.0 and m["grad_norm"] > 0
    assert m["learner/tokens"] == batch["attention_mask"].sum()  # every real token, once
    assert m["lr"] == pytest.approx(1e-3) and m["ratio_mean"] == pytest.approx(1.0)
    assert all(math.isfinite(v) for v in m.values())
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_a_non_finite_gradient_skips_the_optimizer_step_and_is_counted(random_model_dir, batch):
    poisoned = {**batch, "advantages": batch["advantages"].copy()}
    poisoned["advantages"][3] = np.nan
    stats, before, after = _step(random_model_dir, poisoned, epochs_per_step=2)
    m = stats.metrics()
    assert m["learner/skipped_steps"] == 2.0  # both epochs' steps
    assert not math.isfinite(m["grad_norm"])
    assert all(torch.equal(before[k], after[k]) for k in before)  # AdamW never stepped


def test_the_rllib_learner_reports_what_gradient_step_computes(random_model_dir, batch):
    from rlvr.train.learner import Learner, LearnerConfig

    direct = _step(random_model_dir, batch)[0].metrics()
    learner = Learner(
        LearnerConfig(model_path=str(random_model_dir), temperature=0.8, lr=1e-3, **HP)
    )
    try:
        through_rllib = learner.update(batch, step=1)
    finally:
        learner.shutdown()
    assert tuple(through_rllib) == LEARNER_METRICS
    for k in LEARNER_METRICS:
        assert through_rllib[k] == pytest.approx(direct[k], rel=1e-5, abs=1e-9), k


def test_the_kl_reference_stays_in_eval_mode_when_the_learner_sets_train_mode(random_model_dir):
    model = PolicyModel(str(random_model_dir), ref_path=str(random_model_dir))
    model.train()  # what Learner.update does before a step
    assert model.lm.training
    assert not any(m.training for m in model.ref_lm.modules())  # no dropout in the reference
    model.eval()
    assert not model.lm.training and not model.ref_lm.training
