"""GSPO, CISPO, entropy bonus, KL estimators, REINFORCE++ (token-level, KL in the reward, and
-baseline) and DAPO's overlong penalty, each against a reference written here from the papers'
formulas, token by token in plain Python loops (independent of the vectorised code)."""

from __future__ import annotations

import math

import pytest
import torch

from rlvr.train.algorithms import (
    compute_advantages,
    kl_estimate,
    overlong_penalty,
    policy_loss,
    reinforce_pp_token_advantages,
    sequence_signal,
)

torch.manual_seed(0)
B, T = 4, 6
LENGTHS = [6, 3, 5, 1]
MASK = torch.tensor([[1.0] * n + [0.0] * (T - n) for n in LENGTHS])
OLD = -torch.rand(B, T) * 2
NEW = OLD + torch.randn(B, T) * 0.3  # ratios both inside and outside the clip range
ADV = torch.tensor([1.0, -0.5, 2.0, -1.5])


def _leaf(x: torch.Tensor) -> torch.Tensor:
    return x.clone().requires_grad_(True)


def _ref_gspo(new, old, adv, lo, hi):
    """GSPO (Zheng et al. 2025) token_mean: Σ_i n_i·(−min(s_i A_i, clip(s_i) A_i)) / Σ n."""
    total, n_all = 0.0, sum(LENGTHS)
    for i, n in enumerate(LENGTHS):
        s = torch.exp(sum(new[i, t] - old[i, t] for t in range(n)) / n)
        term = -torch.minimum(s * adv[i], torch.clamp(s, 1 - lo, 1 + hi) * adv[i])
        total = total + term * n
    return total / n_all


def _ref_cispo(new, old, adv, hi):
    """CISPO (MiniMax-M1) token_mean: −Σ_{i,t} sg(min(r_it, 1 + ε_high))·A_i·logp_it / Σ n."""
    total = 0.0
    for i, n in enumerate(LENGTHS):
        for t in range(n):
            r = math.exp(float(new[i, t] - old[i, t]))
            total = total - min(r, 1 + hi) * float(adv[i]) * new[i, t]
    return total / sum(LENGTHS)


@pytest.mark.parametrize("lo, hi", [(0.2, 0.28), (3e-4, 4e-4)])
def test_gspo_loss_and_gradient_match_the_sequence_level_reference(lo, hi):
    a, b = _leaf(NEW), _leaf(NEW)
    loss, stats = policy_loss(a, OLD, ADV, MASK, lo, hi, ratio_level="sequence")
    ref = _ref_gspo(b, OLD, ADV, lo, hi)
    loss.backward(), ref.backward()
    assert float(loss) == pytest.approx(float(ref), rel=1e-5)
    assert torch.allclose(a.grad, b.grad, atol=1e-6)
    # every token of a sequence shares one ratio: a sequence is clipped whole or not at all
    assert 0.0 <= float(stats["clip_frac"]) <= 1.0


def test_gspo_equals_token_level_grpo_when_the_ratio_is_one():
    a, b = _leaf(OLD), _leaf(OLD)
    seq, _ = policy_loss(a, OLD, ADV, MASK, ratio_level="sequence")
    tok, _ = policy_loss(b, OLD, ADV, MASK, ratio_level="token")
    seq.backward(), tok.backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-7)


def test_cispo_keeps_a_gradient_on_clipped_tokens_and_matches_the_reference():
    hi = 0.1
    a, b = _leaf(NEW), _leaf(NEW)
    loss, stats = policy_loss(a, OLD, ADV, MASK, clip_high=hi, objective="cispo")
    ref = _ref_cispo(b, OLD, ADV, hi)
    loss.backward(), ref.backward()
    assert float(loss) == pytest.approx(float(ref), rel=1e-5)
    assert torch.allclose(a.grad, b.grad, atol=1e-6)
    capped = ((NEW - OLD).exp() > 1 + hi) & MASK.bool()
    assert capped.any() and (a.grad[capped] != 0).all()  # PPO-clip would zero these (A > 0)
    assert float(stats["clip_frac"]) == pytest.approx(float(capped.sum()) / sum(LENGTHS))


def test_entropy_bonus_subtracts_coef_times_mean_entropy_and_its_gradient():
    ent = _leaf(torch.rand(B, T))
    base, _ = policy_loss(NEW, OLD, ADV, MASK)
    loss, _ = policy_loss(NEW, OLD, ADV, MASK, entropy=ent, entropy_coef=0.05)
    mean_h = float((ent * MASK).sum() / MASK.sum())
    assert float(loss) == pytest.approx(float(base) - 0.05 * mean_h, rel=1e-6)
    loss.backward()
    assert torch.allclose(ent.grad, -0.05 * MASK / MASK.sum())


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_kl_estimators_match_their_formulas(estimator):
    lp, ref = torch.tensor([-1.0, -0.2, -3.0]), torch.tensor([-1.5, -0.1, -2.0])
    want = {
        "k1": [a - b for a, b in zip(lp.tolist(), ref.tolist(), strict=True)],
        "k2": [0.5 * (a - b) ** 2 for a, b in zip(lp.tolist(), ref.tolist(), strict=True)],
        "k3": [
            math.exp(b - a) - (b - a) - 1 for a, b in zip(lp.tolist(), ref.tolist(), strict=True)
        ],
    }[estimator]
    assert kl_estimate(lp, ref, estimator).tolist() == pytest.approx(want, rel=1e-5)


def test_k1_and_k3_are_unbiased_for_the_exact_kl():
    """E_{x~π}[k(x)] over the full support equals KL(π‖π_ref) for k1 and k3."""
    p = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
    q = torch.tensor([0.25, 0.25, 0.25, 0.25], dtype=torch.float64)
    exact = float((p * (p / q).log()).sum())
    for est in ("k1", "k3"):
        assert float((p * kl_estimate(p.log(), q.log(), est)).sum()) == pytest.approx(exact)
    assert float((p * kl_estimate(p.log(), q.log(), "k2")).sum()) != pytest.approx(exact)


def test_kl_term_in_the_loss_uses_the_chosen_estimator():
    ref = OLD - 0.1
    for est in ("k1", "k2", "k3"):
        loss, stats = policy_loss(
            NEW, OLD, ADV, MASK, ref_logprobs=ref, kl_coef=0.5, kl_estimator=est
        )
        base, _ = policy_loss(NEW, OLD, ADV, MASK)
        kl = float((kl_estimate(NEW, ref, est) * MASK).sum() / MASK.sum())
        assert float(stats["kl"]) == pytest.approx(kl, rel=1e-5)
        assert float(loss) == pytest.approx(float(base) + 0.5 * kl, rel=1e-5)


def _ref_reinforce_pp(rewards, kl, coef):
    """Returns to go of r_t = −coef·kl_t (+ R at the last token), whitened over all tokens."""
    returns = []
    for i, n in enumerate(LENGTHS):
        row = []
        for t in range(n):
            g = sum(-coef * float(kl[i, s]) for s in range(t, n)) + float(rewards[i])
            row.append(g)
        returns.append(row)
    flat = [g for row in returns for g in row]
    mean = sum(flat) / len(flat)
    std = math.sqrt(sum((g - mean) ** 2 for g in flat) / (len(flat) - 1))
    return [[(g - mean) / (std + 1e-6) for g in row] for row in returns]


def test_reinforce_pp_token_advantages_fold_the_kl_into_returns_and_whiten_globally():
    kl = torch.rand(B, T) * 0.2
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.5])
    adv = reinforce_pp_token_advantages(rewards, kl, MASK, kl_coef=0.3)
    want = _ref_reinforce_pp(rewards, kl, 0.3)
    for i, n in enumerate(LENGTHS):
        assert adv[i, :n].tolist() == pytest.approx(want[i], abs=1e-5)
        assert adv[i, n:].abs().sum() == 0  # padding
    assert float((adv * MASK).sum()) == pytest.approx(0.0, abs=1e-5)


def test_reinforce_pp_baseline_subtracts_the_group_mean_then_whitens_the_batch():
    rewards, groups = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0], [0, 0, 0, 1, 1, 1]
    centred = [1 - 1 / 3, -1 / 3, -1 / 3, 0.0, 0.0, 0.0]
    mean = sum(centred) / 6
    std = math.sqrt(sum((c - mean) ** 2 for c in centred) / 5)
    want = [(c - mean) / (std + 1e-6) for c in centred]
    got = compute_advantages(rewards, groups, "reinforce_pp_baseline")
    assert got.tolist() == pytest.approx(want, abs=1e-5)


def test_sequence_signal_sends_the_pre_kl_reward_in_reward_mode():
    rewards, groups = [1.0, 0.0, 1.0, 1.0], [0, 0, 1, 1]
    assert sequence_signal(rewards, groups, "reinforce_pp", "reward").tolist() == rewards
    assert sequence_signal(rewards, groups, "reinforce_pp_baseline", "reward").tolist() == [
        0.5,
        -0.5,
        0.0,
        0.0,
    ]
    assert torch.equal(
        sequence_signal(rewards, groups, "grpo"), compute_advantages(rewards, groups, "grpo")
    )
    with pytest.raises(ValueError, match="REINFORCE"):
        sequence_signal(rewards, groups, "grpo", "reward")


def test_overlong_penalty_is_dapos_soft_punishment():
    # L_max = 100, buffer 20: 0 up to 80, linear to -1 at 100
    got = overlong_penalty([10, 80, 81, 90, 100, 101], max_tokens=100, buffer_tokens=20)
    assert got == pytest.approx([0.0, 0.0, -0.05, -0.5, -1.0, -1.0])
    assert overlong_penalty([100], 100, 0) == [0.0]  # no buffer: nothing before the limit
