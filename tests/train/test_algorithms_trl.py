"""GSPO, CISPO and the DAPO (token-mean) loss against TRL's own ``GRPOTrainer._compute_loss``
(TRL 1.16), called on the same logprobs and advantages. Skipped when ``trl`` is absent."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from rlvr.train.algorithms import policy_loss

trl_grpo = pytest.importorskip("trl.trainer.grpo_trainer")

torch.manual_seed(1)
B, T = 4, 5
MASK = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0], [1, 0, 0, 0, 0]])
OLD = -torch.rand(B, T) * 2
NEW = OLD + torch.randn(B, T) * 0.3
ADV = torch.tensor([1.0, -0.5, 2.0, -1.5])


class _Accelerator:
    num_processes = 1

    def gather(self, x):
        return x

    gather_for_metrics = gather

    def reduce(self, x, reduction="sum"):
        return x


def _trl_loss(logp: torch.Tensor, loss_type: str, level: str, eps_low: float, eps_high: float):
    """TRL's loss on ``logp`` (its model forward replaced by returning ``logp``)."""
    trainer = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logp, torch.zeros_like(logp), None),
        aux_loss_enabled=False,
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level=level,
        beta=0.0,
        loss_type=loss_type,
        epsilon_low=eps_low,
        epsilon_high=eps_high,
        args=SimpleNamespace(delta=None, use_bias_correction_kl=False, steps_per_generation=1),
        use_vllm=False,
        _entropy_bonus_enabled=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        current_gradient_accumulation_steps=1,
        accelerator=_Accelerator(),
        model=SimpleNamespace(training=True),
    )
    inputs = {
        "prompt_ids": torch.zeros(B, 1, dtype=torch.long),
        "prompt_mask": torch.ones(B, 1, dtype=torch.long),
        "completion_ids": torch.zeros(B, T, dtype=torch.long),
        "completion_mask": MASK,
        "advantages": ADV,
        "old_per_token_logps": OLD,
        "num_items_in_batch": MASK.sum(),
    }
    return trl_grpo.GRPOTrainer._compute_loss(trainer, None, inputs)


def _both(ours_kw: dict, trl_args: tuple):
    a, b = NEW.clone().requires_grad_(True), NEW.clone().requires_grad_(True)
    ours, _ = policy_loss(a, OLD, ADV, MASK, loss_agg="token_mean", **ours_kw)
    theirs = _trl_loss(b, *trl_args)
    ours.backward(), theirs.backward()
    assert float(ours) == pytest.approx(float(theirs), rel=1e-5)
    assert torch.allclose(a.grad, b.grad, atol=1e-6)


def test_token_level_clip_higher_matches_trls_dapo_loss():
    _both(dict(clip_low=0.2, clip_high=0.28), ("dapo", "token", 0.2, 0.28))


def test_gspo_matches_trls_sequence_level_importance_sampling():
    # TRL's sequence level with bnpo is the token-mean of the per-sequence term
    _both(
        dict(clip_low=0.05, clip_high=0.08, ratio_level="sequence"),
        ("bnpo", "sequence", 0.05, 0.08),
    )


def test_cispo_matches_trls_cispo_loss():
    # TRL's epsilon_high is CISPO's absolute cap on the IS weight: 1 + clip_high here
    _both(dict(clip_high=0.1, objective="cispo"), ("cispo", "token", 0.2, 1.1))
