"""GRPO-family RLVR math: advantage estimators and the clipped policy loss.

Pure functions on tensors, shared by the learner and the tests. The exact semantics are in
docs/design.md ("Loss semantics"); in short, for token t of sequence i with ratio
ρ = exp(logp − old_logp) and sequence advantage A:

    pg  = −min(ρ·A, clip(ρ, 1 − clip_low, 1 + clip_high)·A)      # PPO-clip, DAPO clip-higher
    pg  = −sg(min(ρ, 1 + clip_high))·A·logp                         # objective=cispo (MiniMax-M1)
    pg *= min(exp(old_logp − rollout_logp), tis_cap)               # truncated IS (optional, detached)
    l   = pg + kl_coef · KL_est(logp, ref) − entropy_coef · H      # KL k1|k2|k3, entropy bonus

With ``ratio_level="sequence"`` (GSPO, Zheng et al. 2025) ρ is the sequence's length-normalised
ratio exp(mean_t(logp − old_logp)), shared by all its tokens. ``A`` is one advantage per
sequence, or per token (REINFORCE++ with the KL folded into the reward).

and the per-token losses are aggregated over the response mask (``token_mean``,
``seq_mean_token_mean`` or ``seq_mean_token_sum_norm``).

Advantage estimators (one scalar per sequence, groups = completions of one prompt):

* ``grpo`` (DeepSeekMath): (r − mean_g) / (std_g + ε), std with Bessel's correction.
* ``dr_grpo`` (Dr. GRPO, Liu et al. 2025): r − mean_g; no std division.
* ``rloo`` (Ahmadian et al. 2024): r_i − mean_{j≠i} r_j = G/(G−1) · (r_i − mean_g).
* ``reinforce_pp`` (REINFORCE++, Hu 2025): the reward whitened over the whole batch,
  (r − mean_B) / (std_B + ε): a global baseline instead of a per-prompt one.
* ``reinforce_pp_baseline`` (REINFORCE++-baseline): the group mean subtracted first,
  r − mean_g, then whitened over the whole batch.

With ``kl_mode="reward"`` the REINFORCE++ estimators become token-level, as published:
:func:`reinforce_pp_token_advantages` folds −kl_coef·KL_t into the reward, sums returns to
go and whitens them over every response token of the batch.

A group whose rewards are all equal gets advantage 0 under ``grpo``, ``dr_grpo`` and
``rloo`` (it carries no learning signal); :func:`groups_with_signal` finds those groups for
dynamic sampling (DAPO).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import get_args

import torch

from rlvr.config import Estimator, KlEstimator, KlMode, LossAgg, Objective, RatioLevel

ESTIMATORS: tuple[str, ...] = get_args(Estimator)  # the job spec's names, defined there
LOSS_AGGS: tuple[str, ...] = get_args(LossAgg)
KL_ESTIMATORS: tuple[str, ...] = get_args(KlEstimator)
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
        return _whiten(r, eps).float()

    index, k = _group_index(g)
    count = torch.zeros(k, dtype=r.dtype).index_add_(0, index, torch.ones_like(r))
    mean = torch.zeros(k, dtype=r.dtype).index_add_(0, index, r) / count
    # an all-equal group's float mean can miss its rewards in the last bit (8 x 1.1 / 8): its
    # centred rewards are 0 exactly, which the learner's rows_with_gradient relies on
    centered = torch.where(groups_with_signal(r, g), r - mean[index], torch.zeros_like(r))
    if estimator == "reinforce_pp_baseline":
        return _whiten(centered, eps).float()
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


def _whiten(x: torch.Tensor, eps: float) -> torch.Tensor:
    """(x − mean) / (std + ε) over all of ``x``, std with Bessel's correction."""
    std = x.std(unbiased=True) if x.numel() > 1 else torch.zeros((), dtype=x.dtype)
    return (x - x.mean()) / (std + eps)


def sequence_signal(
    rewards: torch.Tensor | Sequence[float],
    group_ids: torch.Tensor | Sequence[int],
    estimator: Estimator,
    kl_mode: KlMode = "loss",
) -> torch.Tensor:
    """``[B]`` what the driver sends the learner as ``advantages``.

    With ``kl_mode="loss"`` the sequence advantage (:func:`compute_advantages`). With
    ``kl_mode="reward"`` (REINFORCE++ only) the reward before the KL is folded in: r for
    ``reinforce_pp``, r − mean_g for ``reinforce_pp_baseline``; the learner, which holds
    the reference logprobs, finishes it (:func:`reinforce_pp_token_advantages`).
    """
    if kl_mode == "loss":
        return compute_advantages(rewards, group_ids, estimator)
    if estimator == "reinforce_pp":
        return _as_tensor(rewards, torch.float32)
    if estimator == "reinforce_pp_baseline":
        return compute_advantages(rewards, group_ids, "dr_grpo")
    raise ValueError(f"kl_mode='reward' needs a REINFORCE++ estimator, not {estimator!r}")


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


def kl_estimate(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: KlEstimator = "k3"
) -> torch.Tensor:
    """Per-token estimate of KL(π‖π_ref) from samples of π, with d = logp − ref:

    * ``k1`` = d: unbiased, high variance, can be negative (the usual reward-side penalty);
    * ``k2`` = d²/2: biased, low variance; its gradient is that of the reverse KL;
    * ``k3`` = exp(−d) + d − 1: unbiased and ≥ 0 (:func:`k3_kl`).

    Schulman, "Approximating KL divergence" (2020).
    """
    if estimator == "k3":
        return k3_kl(logprobs, ref_logprobs)
    d = logprobs - ref_logprobs
    if estimator == "k1":
        return d
    if estimator == "k2":
        return 0.5 * d * d
    raise ValueError(
        f"unknown KL estimator {estimator!r}; choose one of {', '.join(KL_ESTIMATORS)}"
    )


def reinforce_pp_returns(
    seq_rewards: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float
) -> torch.Tensor:
    """REINFORCE++'s returns to go, the KL folded into the reward: token rewards
    r_t = −kl_coef·KL_t, plus the sequence reward R on the last response token, and
    G_t = Σ_{s≥t} r_s (γ = 1). ``seq_rewards`` ``[B]``; ``kl``, ``mask`` ``[B, T]``
    (right-padded responses). Returns ``[B, T]`` float64, 0 on padding."""
    maskf = mask.to(torch.float64)
    r = -kl_coef * kl.detach().to(torch.float64) * maskf
    last = (maskf.sum(-1, keepdim=True) - 1).clamp(min=0).long()
    r = r.scatter_add(-1, last, seq_rewards.to(torch.float64).unsqueeze(-1))
    return r.flip(-1).cumsum(-1).flip(-1) * maskf


def whiten_masked_many(
    xs: Sequence[torch.Tensor], masks: Sequence[torch.Tensor], eps: float = EPS
) -> list[torch.Tensor]:
    """(x − mean) / (std + ε) with mean and std (Bessel's correction) over the masked
    positions of all of ``xs`` together (tensors of different widths); float32, 0 on padding."""
    values = torch.cat([x[m.bool()] for x, m in zip(xs, masks, strict=True)])
    mean = values.mean() if values.numel() else torch.zeros((), dtype=values.dtype)
    std = values.std(unbiased=True) if values.numel() > 1 else torch.zeros((), dtype=values.dtype)
    return [
        ((x - mean) / (std + eps) * m.to(x.dtype)).float() for x, m in zip(xs, masks, strict=True)
    ]


def reinforce_pp_token_advantages(
    seq_rewards: torch.Tensor,
    kl: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
    eps: float = EPS,
) -> torch.Tensor:
    """REINFORCE++ (Hu 2025) token advantages: the returns of :func:`reinforce_pp_returns`
    whitened over every response token of the batch, (G − mean) / (std + ε).

    ``seq_rewards`` ``[B]``: the raw reward, or r − mean_g for the -baseline variant
    (:func:`sequence_signal`). Returns ``[B, T]`` float32, 0 on padding.
    """
    return whiten_masked_many([reinforce_pp_returns(seq_rewards, kl, mask, kl_coef)], [mask], eps)[
        0
    ]


def overlong_penalty(lengths: Sequence[int], max_tokens: int, buffer_tokens: int) -> list[float]:
    """DAPO's soft overlong punishment, added to each completion's reward:

        0                               if L ≤ L_max − L_buf
        (L_max − L_buf − L) / L_buf     if L_max − L_buf < L ≤ L_max
        −1                              if L > L_max

    with L_max = ``max_tokens`` (the generation budget) and L_buf = ``buffer_tokens``.
    """
    start = max_tokens - buffer_tokens
    out = []
    for n in lengths:
        if n <= start:
            out.append(0.0)
        elif n <= max_tokens:
            out.append((start - n) / max(buffer_tokens, 1))
        else:
            out.append(-1.0)
    return out


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
    ratio_level: RatioLevel = "token",
    objective: Objective = "clip",
    kl_estimator: KlEstimator = "k3",
    entropy: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped policy-gradient loss of a batch of responses.

    Args:
        logprobs: ``[B, T]`` log π_θ of the sampled tokens (with grad).
        old_logprobs: ``[B, T]`` log π_old (the learner's policy that the batch is
            attributed to; detached).
        advantages: ``[B]`` one advantage per sequence, or ``[B, T]`` one per token.
        mask: ``[B, T]`` 1 for response tokens, 0 for padding.
        clip_low, clip_high: the ratio is clipped to ``[1 - clip_low, 1 + clip_high]``.
        loss_agg: ``token_mean`` | ``seq_mean_token_mean`` | ``seq_mean_token_sum_norm``.
        ref_logprobs, kl_coef: add ``kl_coef`` × k3 KL to the reference policy.
        rollout_logprobs, tis_cap: truncated importance sampling against the rollout
            engine's logprobs: pg × min(exp(old − rollout), tis_cap), detached.
        ratio_level: ``token`` (PPO/GRPO) or ``sequence`` (GSPO: the length-normalised
            sequence ratio exp(mean_t(logp − old)), clipped as a whole).
        objective: ``clip`` (PPO-clip) or ``cispo`` (−sg(min(ρ, 1 + clip_high))·A·logp:
            every token keeps a gradient, only the IS weight is clipped).
        kl_estimator: ``k1`` | ``k2`` | ``k3`` (:func:`kl_estimate`).
        entropy, entropy_coef: subtract ``entropy_coef`` × the token entropy ``[B, T]``
            (an exploration bonus; needs the entropy with grad).

    Returns:
        ``(loss, stats)``; stats are detached scalars: ``pg_loss``, ``clip_frac`` (fraction
        of tokens where the clipped branch is active, or the IS weight is capped under
        CISPO), ``ratio_mean``, ``kl`` (to the reference, 0 without one),
        ``tis_weight_mean`` (1 without TIS).
    """
    if logprobs.shape != old_logprobs.shape or logprobs.shape != mask.shape:
        raise ValueError(
            f"logprobs {tuple(logprobs.shape)}, old_logprobs {tuple(old_logprobs.shape)} and "
            f"mask {tuple(mask.shape)} must have the same [B, T] shape"
        )
    if advantages.shape not in (logprobs.shape[:1], logprobs.shape):
        raise ValueError(
            f"advantages must be [B]={logprobs.shape[0]} or [B, T]={tuple(logprobs.shape)}, "
            f"got {tuple(advantages.shape)}"
        )
    maskf = mask.to(logprobs.dtype)
    adv = advantages.to(logprobs.dtype)
    adv = adv.unsqueeze(-1) if adv.ndim == 1 else adv
    log_ratio = logprobs - old_logprobs
    if ratio_level == "sequence":  # GSPO: one length-normalised ratio per sequence
        seq = (log_ratio * maskf).sum(-1, keepdim=True) / maskf.sum(-1, keepdim=True).clamp(min=1)
        log_ratio = seq.expand_as(logprobs)
    elif ratio_level != "token":
        raise ValueError(f"unknown ratio_level {ratio_level!r}; choose token or sequence")
    ratio = torch.exp(log_ratio)
    if objective == "cispo":
        weight = torch.clamp(ratio, max=1.0 + clip_high).detach()
        pg = -weight * adv * logprobs
        clip_active = ratio.detach() > 1.0 + clip_high
    elif objective == "clip":
        unclipped = ratio * adv
        clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * adv
        pg = -torch.minimum(unclipped, clipped)
        clip_active = (clipped < unclipped).detach()  # min() picked the clipped branch
    else:
        raise ValueError(f"unknown objective {objective!r}; choose clip or cispo")

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
        kl = kl_estimate(logprobs, ref_logprobs, kl_estimator)
        stats["kl"] = ((kl * maskf).sum() / n_tok).detach()
        if kl_coef:
            per_token = per_token + kl_coef * kl
    else:
        stats["kl"] = torch.zeros((), dtype=logprobs.dtype)
    if entropy is not None and entropy_coef:
        per_token = per_token - entropy_coef * entropy

    loss = aggregate(per_token, maskf, loss_agg)
    with torch.no_grad():
        stats["clip_frac"] = (clip_active.to(maskf.dtype) * maskf).sum() / n_tok
        stats["ratio_mean"] = (ratio * maskf).sum() / n_tok
        stats["pg_loss"] = aggregate(pg, maskf, loss_agg)
    return loss, stats
