"""GRPO-family RLVR math: advantage estimators and the clipped policy loss.

Pure functions on tensors, shared by the learner and the tests. The exact semantics are in
docs/design.md ("Loss semantics"); in short, for token t of sequence i with ratio
ρ = exp(logp − old_logp) and sequence advantage A:

    pg  = −min(ρ·A, clip(ρ, 1 − clip_low, 1 + clip_high)·A)      # PPO-clip, DAPO clip-higher
    pg *= min(exp(old_logp − rollout_logp), tis_cap)               # truncated IS (optional, detached)
    l   = pg + kl_coef · (exp(ref − logp) − (ref − logp) − 1)      # k3 KL to a reference (optional)

and the per-token losses are aggregated over the response mask (``token_mean``,
``seq_mean_token_mean`` or ``seq_mean_token_sum_norm``).

Advantage estimators (one scalar per sequence, groups = completions of one prompt):

* ``grpo`` (DeepSeekMath): (r − mean_g) / (std_g + ε), std with Bessel's correction.
* ``dr_grpo`` (Dr. GRPO, Liu et al. 2025): r − mean_g; no std division.
* ``rloo`` (Ahmadian et al. 2024): r_i − mean_{j≠i} r_j = G/(G−1) · (r_i − mean_g).
* ``reinforce_pp`` (REINFORCE++, Hu 2025): the reward whitened over the whole batch,
  (r − mean_B) / (std_B + ε): a global baseline instead of a per-prompt one.

A group whose rewards are all equal gets advantage 0 under ``grpo``, ``dr_grpo`` and
``rloo`` (it carries no learning signal); :func:`groups_with_signal` finds those groups for
dynamic sampling (DAPO).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import get_args

import torch

from rlvr.config import Estimator, LossAgg

ESTIMATORS: tuple[str, ...] = get_args(Estimator)  # the job spec's names, defined there
LOSS_AGGS: tuple[str, ...] = get_args(LossAgg)
EPS = 1e-6


def _as_tensor(x: torch.Tensor | Sequence, dtype: torch.dtype) -> torch.Tensor:
    return x.to(dtype) if isinstance(x, torch.Tensor) else torch.as_tensor(x, dtype=dtype)


def _group_index(group_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Map arbitrary group ids to 0..K-1 (for scatter-based group statistics)."""
    _, index = torch.unique(group_ids, return_inverse=True)
    return index, int(index.max().item()) + 1 if index.numel() else 0


def compute_advantages(
    rewards: torch.Tensor | Sequence[float],
    group_ids: torch.Tensor | Sequence[int],
    estimator: Estimator = "grpo",
    eps: float = EPS,
) -> torch.Tensor:
    """One advantage per completion.

    Args:
        rewards: ``[B]`` scalar rewards.
        group_ids: ``[B]`` the prompt each completion belongs to (any integers).
        estimator: ``grpo``, ``dr_grpo``, ``rloo`` or ``reinforce_pp`` (see module doc).
        eps: added to the standard deviation (``grpo``, ``reinforce_pp``).

    Returns:
        ``[B]`` float32 advantages.
    """
    r = _as_tensor(rewards, torch.float64)
    g = _as_tensor(group_ids, torch.long)
    if r.ndim != 1 or g.shape != r.shape:
        raise ValueError(
            f"rewards and group_ids must both be [B]; got {tuple(r.shape)} and {tuple(g.shape)}"
        )
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    if r.numel() == 0:
        return r.float()

    if estimator == "reinforce_pp":
        std = r.std(unbiased=True) if r.numel() > 1 else torch.zeros((), dtype=r.dtype)
        return ((r - r.mean()) / (std + eps)).float()

    index, k = _group_index(g)
    count = torch.zeros(k, dtype=r.dtype).index_add_(0, index, torch.ones_like(r))
    mean = torch.zeros(k, dtype=r.dtype).index_add_(0, index, r) / count
    centered = r - mean[index]
    if estimator == "dr_grpo":
        return centered.float()
    n = count[index]
    if estimator == "rloo":
        # r_i - (sum_g - r_i)/(n - 1) == n/(n - 1) * (r_i - mean_g); a singleton has no baseline.
        scale = torch.where(n > 1, n / (n - 1).clamp(min=1), torch.zeros_like(n))
        return (centered * scale).float()
    # grpo: unbiased group std (torch.std's default, as in the reference implementations).
    sq = torch.zeros(k, dtype=r.dtype).index_add_(0, index, centered**2)
    var = sq / (count - 1).clamp(min=1)
    std = var.sqrt()[index]
    return (centered / (std + eps)).float()


def groups_with_signal(
    rewards: torch.Tensor | Sequence[float], group_ids: torch.Tensor | Sequence[int]
) -> torch.Tensor:
    """``[B]`` bool: True where the completion's group has rewards that are not all equal.

    Dynamic sampling (DAPO) trains only on these; an all-equal group has zero advantage.
    """
    r = _as_tensor(rewards, torch.float64)
    g = _as_tensor(group_ids, torch.long)
    if r.numel() == 0:
        return torch.zeros(0, dtype=torch.bool)
    index, k = _group_index(g)
    hi = torch.full((k,), -torch.inf, dtype=r.dtype).scatter_reduce(0, index, r, "amax")
    lo = torch.full((k,), torch.inf, dtype=r.dtype).scatter_reduce(0, index, r, "amin")
    return (hi > lo)[index]


def aggregate(loss: torch.Tensor, mask: torch.Tensor, loss_agg: LossAgg) -> torch.Tensor:
    """Reduce per-token ``loss[B, T]`` over ``mask[B, T]`` (see module doc)."""
    mask = mask.to(loss.dtype)
    if loss_agg == "token_mean":
        return (loss * mask).sum() / mask.sum().clamp(min=1.0)
    if loss_agg == "seq_mean_token_mean":
        per_seq = (loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
        return per_seq.mean()
    if loss_agg == "seq_mean_token_sum_norm":
        return (loss * mask).sum() / (mask.shape[0] * mask.shape[1])
    raise ValueError(f"unknown loss_agg {loss_agg!r}; choose one of {', '.join(LOSS_AGGS)}")


def k3_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(π‖π_ref) from samples of π: exp(d) − d − 1, d = ref − logp.

    Always ≥ 0 and unbiased (Schulman, "Approximating KL divergence").
    """
    d = ref_logprobs - logprobs
    return torch.exp(d) - d - 1.0


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    loss_agg: LossAgg = "token_mean",
    ref_logprobs: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    rollout_logprobs: torch.Tensor | None = None,
    tis_cap: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped policy-gradient loss of a batch of responses.

    Args:
        logprobs: ``[B, T]`` log π_θ of the sampled tokens (with grad).
        old_logprobs: ``[B, T]`` log π_old (the learner's policy that the batch is
            attributed to; detached).
        advantages: ``[B]`` one advantage per sequence.
        mask: ``[B, T]`` 1 for response tokens, 0 for padding.
        clip_low, clip_high: the ratio is clipped to ``[1 - clip_low, 1 + clip_high]``.
        loss_agg: ``token_mean`` | ``seq_mean_token_mean`` | ``seq_mean_token_sum_norm``.
        ref_logprobs, kl_coef: add ``kl_coef`` × k3 KL to the reference policy.
        rollout_logprobs, tis_cap: truncated importance sampling against the rollout
            engine's logprobs: pg × min(exp(old − rollout), tis_cap), detached.

    Returns:
        ``(loss, stats)``; stats are detached scalars: ``pg_loss``, ``clip_frac`` (fraction
        of tokens where the clipped branch is active), ``ratio_mean``, ``kl`` (k3 to the
        reference, 0 without one), ``tis_weight_mean`` (1 without TIS).
    """
    if logprobs.shape != old_logprobs.shape or logprobs.shape != mask.shape:
        raise ValueError(
            f"logprobs {tuple(logprobs.shape)}, old_logprobs {tuple(old_logprobs.shape)} and "
            f"mask {tuple(mask.shape)} must have the same [B, T] shape"
        )
    if advantages.shape != logprobs.shape[:1]:
        raise ValueError(
            f"advantages must be [B]={logprobs.shape[0]}, got {tuple(advantages.shape)}"
        )
    maskf = mask.to(logprobs.dtype)
    adv = advantages.to(logprobs.dtype).unsqueeze(-1)
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * adv
    pg = -torch.minimum(unclipped, clipped)

    stats: dict[str, torch.Tensor] = {}
    n_tok = maskf.sum().clamp(min=1.0)
    if tis_cap is not None:
        if rollout_logprobs is None:
            raise ValueError("tis_cap needs rollout_logprobs")
        weight = torch.clamp(torch.exp(old_logprobs - rollout_logprobs), max=tis_cap).detach()
        pg = pg * weight
        stats["tis_weight_mean"] = ((weight * maskf).sum() / n_tok).detach()
    else:
        stats["tis_weight_mean"] = torch.ones((), dtype=logprobs.dtype)

    per_token = pg
    if ref_logprobs is not None:
        kl = k3_kl(logprobs, ref_logprobs)
        stats["kl"] = ((kl * maskf).sum() / n_tok).detach()
        if kl_coef:
            per_token = per_token + kl_coef * kl
    else:
        stats["kl"] = torch.zeros((), dtype=logprobs.dtype)

    loss = aggregate(per_token, maskf, loss_agg)
    with torch.no_grad():
        clip_active = (clipped < unclipped).to(maskf.dtype)  # min() picked the clipped branch
        stats["clip_frac"] = (clip_active * maskf).sum() / n_tok
        stats["ratio_mean"] = (ratio * maskf).sum() / n_tok
        stats["pg_loss"] = aggregate(pg, maskf, loss_agg)
    return loss, stats
