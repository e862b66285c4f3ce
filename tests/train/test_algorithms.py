"""The RL math against hand-computed values (see the docstring of rlvr.train.algorithms)."""

from __future__ import annotations

import math

import pytest
import torch

from rlvr.train.algorithms import compute_advantages, groups_with_signal, k3_kl, policy_loss

REWARDS = [1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0]
GROUPS = [7, 7, 7, 7, 3, 3, 3, 3]  # ids need not be contiguous


def test_grpo_normalises_by_group_std_and_zeroes_uniform_groups():
    adv = compute_advantages(REWARDS, GROUPS, "grpo")
    # group 7: mean 0.5, unbiased std sqrt(1/3) -> +-0.5 / 0.57735
    s = 0.5 / math.sqrt(1 / 3)
    assert adv.tolist() == pytest.approx([s, -s, s, -s, 0, 0, 0, 0], abs=1e-5)


@pytest.mark.parametrize("estimator", ["grpo", "dr_grpo", "rloo"])
def test_a_group_of_equal_rewards_gets_exactly_zero_advantage(estimator):
    # 3 x 0.7 / 3 is not 0.7 in floats: without care the centred rewards are ~1e-16 and
    # grpo's division by (std + eps) makes them ~1e-10 (the learner skips exact zeros only)
    adv = compute_advantages([0.7, 0.7, 0.7, 1.0, 0.0, 0.0], [0, 0, 0, 1, 1, 1], estimator)
    assert adv[:3].tolist() == [0.0, 0.0, 0.0]
    assert all(a != 0.0 for a in adv[3:].tolist())


def test_dr_grpo_only_centres():
    adv = compute_advantages(REWARDS, GROUPS, "dr_grpo")
    assert adv.tolist() == pytest.approx([0.5, -0.5, 0.5, -0.5, 0, 0, 0, 0])


def test_rloo_uses_leave_one_out_baseline():
    adv = compute_advantages(REWARDS, GROUPS, "rloo")
    # 1 - mean(0, 1, 0) = 2/3 ; 0 - mean(1, 1, 0) = -2/3
    assert adv.tolist() == pytest.approx([2 / 3, -2 / 3, 2 / 3, -2 / 3, 0, 0, 0, 0], abs=1e-6)


def test_rloo_singleton_group_has_no_baseline_and_gets_zero():
    assert compute_advantages([1.0], [0], "rloo").tolist() == [0.0]


def test_reinforce_pp_whitens_over_the_whole_batch():
    adv = compute_advantages(REWARDS, GROUPS, "reinforce_pp")
    std = math.sqrt(1.5 / 7)  # mean 0.75; squared deviations 6*0.0625 + 2*0.5625
    hi, lo = 0.25 / std, -0.75 / std
    assert adv.tolist() == pytest.approx([hi, lo, hi, lo, hi, hi, hi, hi], abs=1e-5)
    assert float(adv.mean()) == pytest.approx(0.0, abs=1e-6)


def test_every_estimator_and_loss_agg_a_job_spec_accepts_is_implemented():
    from typing import get_args

    from rlvr.config import AlgorithmSpec, Estimator, LossAgg
    from rlvr.train.algorithms import aggregate

    for name in get_args(Estimator):
        AlgorithmSpec(estimator=name)
        assert compute_advantages(REWARDS, GROUPS, name).shape == (8,)
    for name in get_args(LossAgg):
        AlgorithmSpec(loss_agg=name)
        assert aggregate(torch.ones(2, 3), torch.ones(2, 3), name) == pytest.approx(1.0)


def test_unknown_estimator_is_rejected_with_the_choices():
    with pytest.raises(ValueError, match="grpo"):
        compute_advantages([1.0], [0], "ppo")


def test_groups_with_signal_marks_groups_with_different_rewards():
    keep = groups_with_signal(REWARDS, GROUPS)
    assert keep.tolist() == [True] * 4 + [False] * 4


def _batch():
    # seq0: A=+1, ratios [1.5, 1.0, (0.5 masked)]; seq1: A=-1, ratios [0.5, 1.2, 1.0]
    ratios = torch.tensor([[1.5, 1.0, 0.5], [0.5, 1.2, 1.0]])
    logp = ratios.log().requires_grad_(True)
    old = torch.zeros(2, 3)
    adv = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    return logp, old, adv, mask


@pytest.mark.parametrize(
    ("loss_agg", "expected"),
    [
        # per-token pg: [-1.28, -1, x], [0.8, 1.2, 1.0]; sum over mask = 0.72
        ("token_mean", 0.72 / 5),
        ("seq_mean_token_mean", (-2.28 / 2 + 3.0 / 3) / 2),
        ("seq_mean_token_sum_norm", 0.72 / (2 * 3)),
    ],
)
def test_policy_loss_clips_asymmetrically_and_aggregates(loss_agg, expected):
    logp, old, adv, mask = _batch()
    loss, stats = policy_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.28, loss_agg=loss_agg)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert float(stats["clip_frac"]) == pytest.approx(
        2 / 5
    )  # seq0 tok0 (1.5>1.28), seq1 tok0 (0.5<0.8)


def test_policy_loss_gradient_is_zero_on_clipped_tokens_and_pushes_up_positive_advantage():
    logp, old, adv, mask = _batch()
    loss, _ = policy_loss(logp, old, adv, mask, loss_agg="token_mean")
    loss.backward()
    g = logp.grad
    assert float(g[0, 0]) == 0.0  # clipped: no gradient
    assert float(g[0, 1]) == pytest.approx(-1.0 / 5)  # d(-rho*A)/dlogp = -rho*A = -1, / 5 tokens
    assert float(g[1, 1]) == pytest.approx(1.2 / 5)  # A=-1, rho=1.2: pushes this token down
    assert float(g[0, 2]) == 0.0  # masked


def test_policy_loss_adds_k3_kl_to_reference():
    logp, old, adv, mask = _batch()
    ref = logp.detach() + math.log(2.0)  # d = ln 2 -> k3 = 2 - ln 2 - 1
    k3 = 1.0 - math.log(2.0)
    loss, stats = policy_loss(logp, old, adv, mask, ref_logprobs=ref, kl_coef=0.1)
    assert loss.item() == pytest.approx(0.72 / 5 + 0.1 * k3, abs=1e-6)
    assert float(stats["kl"]) == pytest.approx(k3, abs=1e-6)


def test_policy_loss_truncated_importance_weight_is_capped():
    logp, old, adv, mask = _batch()
    rollout = torch.tensor(
        [[math.log(0.5)] * 3, [0.0] * 3]
    )  # weights: seq0 exp(ln 2)=2 -> cap 1.5; seq1 1
    loss, stats = policy_loss(logp, old, adv, mask, rollout_logprobs=rollout, tis_cap=1.5)
    assert loss.item() == pytest.approx((1.5 * -2.28 + 3.0) / 5, abs=1e-6)
    assert float(stats["tis_weight_mean"]) == pytest.approx((1.5 * 2 + 3) / 5)


def test_k3_is_zero_for_identical_policies_and_positive_otherwise():
    a = torch.tensor([-1.0, -2.0])
    assert k3_kl(a, a).tolist() == [0.0, 0.0]
    assert bool((k3_kl(a, a + 0.3) > 0).all())


def test_policy_loss_rejects_mismatched_shapes():
    logp, old, adv, mask = _batch()
    with pytest.raises(ValueError, match="same"):
        policy_loss(logp, old[:, :2], adv, mask)
