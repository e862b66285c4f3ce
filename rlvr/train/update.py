"""One gradient step of the policy, as a plain function: RLlib's learner calls it on its
shard of the batch, tests call it on a :class:`~rlvr.models.causal_lm.PolicyModel`.

    mini-batches -> micro-batches -> (old logprobs; REINFORCE++ token advantages)
    -> per epoch, per mini-batch: forward, loss, backward per micro-batch -> clip -> step
    -> stats

The loss is normalised exactly under micro-batching and sharding: each micro-batch's loss is
scaled by its share of the whole (all-learner) batch and by the number of learners (DDP
averages gradients), so the summed gradient is that of the loss over the full batch
(docs/training.md, "Learner internals").
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rlvr.config import KlEstimator, KlMode, LossAgg, Objective, RatioLevel
from rlvr.models.causal_lm import precision
from rlvr.rollout._common import split_evenly
from rlvr.train.algorithms import (
    k3_kl,
    kl_estimate,
    policy_loss,
    reinforce_pp_returns,
    whiten_masked_many,
)
from rlvr.train.batch import slice_batch, split_micro_batches


@dataclass(kw_only=True)
class UpdateConfig:
    """The hyperparameters of one gradient step (``algorithm.*``, ``rollout.max_new_tokens``)."""

    dtype: str = "auto"  # model.dtype: the forward's autocast (rlvr.models.causal_lm.precision)
    micro_batch_size: int = 16
    micro_batch_tokens: int | None = None  # set: micro-batches sized by padded tokens
    epochs_per_step: int = 1
    max_grad_norm: float = 1.0
    clip_low: float = 0.2
    clip_high: float = 0.28
    kl_coef: float = 0.0
    loss_agg: LossAgg = "token_mean"
    tis_cap: float | None = None
    gen_budget: int = 256  # max_new_tokens: Dr. GRPO's constant normaliser
    ratio_level: RatioLevel = "token"  # sequence: GSPO
    objective: Objective = "clip"  # cispo: clipped detached IS weight x logprob
    entropy_coef: float = 0.0
    kl_mode: KlMode = "loss"  # reward: REINFORCE++'s KL in the token rewards
    kl_estimator: KlEstimator = "k3"
    mini_batches: int = 1  # optimizer steps per epoch, each on a slice of the batch
    skip_zero_advantage_rows: bool = True  # rows_with_gradient: leave out rows with no gradient


# Per-micro-batch statistics of policy_loss, summed weighted by response tokens.
TOKEN_STATS = ("pg_loss", "kl", "entropy", "clip_frac", "ratio_mean", "tis_weight_mean")


@dataclass
class StepStats:
    """One learner's sums over a step. Summed field by field over the learners (RLlib's
    ``MetricsLogger`` does it), :meth:`metrics` turns them into the step's metrics."""

    pg_loss: float = 0.0  # TOKEN_STATS: token-weighted sums over every epoch
    kl: float = 0.0
    entropy: float = 0.0
    clip_frac: float = 0.0
    ratio_mean: float = 0.0
    tis_weight_mean: float = 0.0
    batch_loss: float = 0.0  # this learner's share of the whole batch's loss, mean over epochs
    mismatch_kl: float = 0.0  # k3 KL(learner || engine) summed over the first epoch's tokens
    tokens: float = 0.0  # response tokens, every epoch
    first_epoch_tokens: float = 0.0
    input_tokens: float = 0.0  # real (prompt + response) tokens through forward + backward
    padded_tokens: float = 0.0  # positions computed, padding included
    grad_norm: float = 0.0  # before clipping, mean over epochs
    lr: float = 0.0
    skipped_steps: float = 0.0  # optimizer steps skipped for a non-finite gradient
    skipped_rows: float = 0.0  # rows Learner.update left out (rows_with_gradient); not summed here
    learners: float = 1.0

    def metrics(self) -> dict[str, float]:
        """The step's learner metrics (names: :data:`LEARNER_METRICS`)."""
        tokens, learners = max(self.tokens, 1.0), max(self.learners, 1.0)
        return {
            "loss": self.batch_loss,  # the objective over the whole batch, exact
            "pg_loss": self.pg_loss / tokens,
            "kl": self.kl / tokens,
            "entropy": self.entropy / tokens,
            "clip_frac": self.clip_frac / tokens,
            "ratio_mean": self.ratio_mean / tokens,
            "tis_weight_mean": self.tis_weight_mean / tokens,
            "mismatch/kl": self.mismatch_kl / max(self.first_epoch_tokens, 1.0),
            "grad_norm": self.grad_norm / learners,
            "lr": self.lr / learners,
            "learner/skipped_steps": self.skipped_steps,
            "learner/skipped_rows": self.skipped_rows,
            "learner/tokens": self.input_tokens,
            "learner/pad_frac": 1.0 - self.input_tokens / max(self.padded_tokens, 1.0),
        }


# Every metric the learner reports, defined once (by StepStats.metrics).
LEARNER_METRICS: tuple[str, ...] = tuple(StepStats().metrics())


def rows_with_gradient(advantages: Sequence[float], hp: UpdateConfig) -> list[int] | None:
    """The rows of a batch whose loss has a gradient, or ``None`` when every row may have one.

    A row whose sequence advantage is exactly 0 (every row of a group whose rewards are all
    equal, under ``grpo``, ``dr_grpo`` and ``rloo``) adds exactly 0 to the policy-gradient
    term of every objective here (clip, CISPO, GSPO, with or without TIS), so leaving it out
    of forward and backward changes no gradient, as long as the loss is still normalised by
    the whole batch (the learner passes the full batch's token and sequence counts) and
    nothing else in the loss depends on the row: no KL term in the loss (``kl_coef`` 0 or
    ``kl_mode`` reward, whose token advantages are not 0), no entropy bonus, and one
    mini-batch (a split into several depends on every row). The optimizer step, AdamW's
    moments and weight decay included, is the same. On the demo this leaves out 38% of the
    rows over a run (docs/training.md, "Learner internals").
    """
    if (
        not hp.skip_zero_advantage_rows
        or (hp.kl_coef and hp.kl_mode == "loss")
        or hp.kl_mode == "reward"
        or hp.entropy_coef
        or hp.mini_batches > 1
    ):
        return None
    return [i for i, a in enumerate(advantages) if a != 0.0]


def micro_batch_loss(
    out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], hp: UpdateConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """The policy loss of one micro-batch, its statistics, and the old logprobs used.

    Old logprobs are ``batch["old_logprobs"]`` when an earlier pass computed them (several
    epochs); otherwise the batch was sampled by exactly these weights and the current
    logprobs, detached, are the old ones.
    """
    logp = out["logprobs"].float()
    old_lp = batch.get("old_logprobs")
    old_lp = logp.detach() if old_lp is None else old_lp
    ref = out.get("ref_logprobs")
    loss, stats = policy_loss(
        logp,
        old_lp,
        batch.get("token_advantages", batch["advantages"]),
        batch["response_mask"],
        clip_low=hp.clip_low,
        clip_high=hp.clip_high,
        loss_agg=hp.loss_agg,
        ref_logprobs=None if ref is None else ref.float(),
        kl_coef=hp.kl_coef if hp.kl_mode == "loss" else 0.0,  # reward: already in A
        rollout_logprobs=batch["rollout_logprobs"],
        tis_cap=hp.tis_cap,
        ratio_level=hp.ratio_level,
        objective=hp.objective,
        kl_estimator=hp.kl_estimator,
        entropy=out["entropy"].float() if hp.entropy_coef else None,
        entropy_coef=hp.entropy_coef,
    )
    mask = batch["response_mask"]
    n_tok = mask.sum().clamp(min=1)
    stats["entropy"] = (out["entropy"].detach() * mask).sum() / n_tok
    if ref is None:
        # No reference model: `kl` is the drift from the batch's policy (0 for a single
        # on-policy epoch, > 0 once epochs_per_step > 1 has moved the weights).
        stats["kl"] = (k3_kl(logp.detach(), old_lp) * mask).sum() / n_tok
    return loss, stats, old_lp


def _loss_share(
    m: dict[str, torch.Tensor], hp: UpdateConfig, total_tokens: float, total_seqs: float
) -> float:
    """A micro-batch's share of the whole batch's loss under ``hp.loss_agg``."""
    if hp.loss_agg == "token_mean":
        return float(m["response_mask"].sum()) / total_tokens
    if hp.loss_agg == "seq_mean_token_mean":
        return len(m["advantages"]) / total_seqs
    # seq_mean_token_sum_norm: the padded width is replaced by the generation budget
    return len(m["advantages"]) / total_seqs * m["response_mask"].shape[1] / hp.gen_budget


def _token_advantages(
    micro: list[dict[str, torch.Tensor]], outs: list[dict[str, torch.Tensor]], hp: UpdateConfig
) -> list[torch.Tensor]:
    """REINFORCE++ with the KL in the reward: each micro-batch's returns, whitened over every
    response token of this learner's shard (algorithms.reinforce_pp_token_advantages)."""
    returns = []
    for m, o in zip(micro, outs, strict=True):
        ref = o.get("ref_logprobs")
        logp = o["logprobs"].float()
        kl = (
            torch.zeros_like(logp)
            if ref is None
            else kl_estimate(logp, ref.float(), hp.kl_estimator)
        )
        returns.append(reinforce_pp_returns(m["advantages"], kl, m["response_mask"], hp.kl_coef))
    return whiten_masked_many(returns, [m["response_mask"] for m in micro])


def _no_sync(model: Any, last: bool) -> contextlib.AbstractContextManager:
    """DDP: all-reduce the gradient on the last micro-batch only."""
    if last or not hasattr(model, "no_sync"):
        return contextlib.nullcontext()
    return model.no_sync()


def gradient_step(
    model: Any,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    hp: UpdateConfig,
    *,
    device: str | torch.device = "cpu",
    shards: int = 1,
    total_tokens: float | None = None,
    total_seqs: float | None = None,
) -> StepStats:
    """``mini_batches`` optimizer steps per epoch on ``batch``, each accumulated over
    micro-batches (one mini-batch: the whole batch, one step per epoch).

    ``model.forward_train(micro_batch)`` returns ``logprobs`` (with grad), ``entropy`` and
    optionally ``ref_logprobs`` (a :class:`~rlvr.models.causal_lm.PolicyModel`, or RLlib's
    module, DDP-wrapped with ``no_sync``). ``batch``: tensors on ``device`` in the layout of
    :func:`~rlvr.train.batch.make_train_batch`, this learner's shard of a batch of
    ``total_tokens`` response tokens and ``total_seqs`` sequences over ``shards`` learners.
    """
    steps = max(1, hp.mini_batches)
    if steps == 1:
        minis = [batch]
    else:  # contiguous slices of rows (groups stay together where the split allows)
        minis = [slice_batch(batch, a, b) for a, b in split_evenly(len(batch["advantages"]), steps)]
        minis = [mb for mb in minis if len(mb["advantages"])]
    plans = [split_micro_batches(mb, hp.micro_batch_size, hp.micro_batch_tokens) for mb in minis]
    micro = [m for plan in plans for m in plan]
    local_tokens = sum(float(m["response_mask"].sum()) for m in micro)
    total_tokens = float(total_tokens or local_tokens)
    total_seqs = float(total_seqs or len(batch["advantages"]))
    autocast = precision(hp.dtype, device, trained=True).autocast
    params = [p for group in optimizer.param_groups for p in group["params"]]
    stats = StepStats()

    # 1. old logprobs: the batch's (rollout) policy before any of this step's updates; and
    # REINFORCE++'s token advantages, which need the reference logprobs
    old: list[torch.Tensor | None] = [None] * len(micro)
    needs_old = hp.epochs_per_step > 1 or len(minis) > 1
    if needs_old or hp.kl_mode == "reward":
        with torch.no_grad(), autocast():
            outs = [model.forward_train(m) for m in micro]
        if needs_old:
            old = [o["logprobs"].float() for o in outs]
        if hp.kl_mode == "reward":
            token_adv = _token_advantages(micro, outs, hp)
            micro = [{**m, "token_advantages": t} for m, t in zip(micro, token_adv, strict=True)]
        del outs
    bounds, at = [], 0
    for plan in plans:
        bounds.append((at, at + len(plan)))
        at += len(plan)

    for epoch in range(hp.epochs_per_step):
        for lo, hi in bounds:
            # 2. a mini-batch's gradient, accumulated over its micro-batches; its loss is
            # normalised by its own size (the whole batch's when there is one mini-batch)
            mb_frac = sum(float(m["response_mask"].sum()) for m in micro[lo:hi]) / max(
                local_tokens, 1.0
            )
            mb_seq_frac = sum(len(m["advantages"]) for m in micro[lo:hi]) / max(
                sum(len(m["advantages"]) for m in micro), 1
            )
            mb_tokens = total_tokens if len(bounds) == 1 else total_tokens * mb_frac
            mb_seqs = total_seqs if len(bounds) == 1 else total_seqs * mb_seq_frac
            optimizer.zero_grad(set_to_none=True)
            for i in range(lo, hi):
                m = micro[i]
                if old[i] is not None:
                    m = {**m, "old_logprobs": old[i]}
                share = _loss_share(m, hp, mb_tokens, mb_seqs) * shards
                with _no_sync(model, last=i == hi - 1):
                    with autocast():
                        out = model.forward_train(m)
                    loss, mb_stats, old_lp = micro_batch_loss(out, m, hp)
                    (loss * share).backward()

                # 3. statistics: the objective's value over the whole batch (summed over
                # learners, shares add to 1), not a mean of micro-batch losses
                whole = _loss_share(m, hp, total_tokens, total_seqs)
                stats.batch_loss += float(loss.detach()) * whole
                n_tok = float(m["response_mask"].sum())
                stats.tokens += n_tok
                stats.input_tokens += float(m["attention_mask"].sum())
                stats.padded_tokens += float(m["attention_mask"].numel())
                for k in TOKEN_STATS:
                    setattr(stats, k, getattr(stats, k) + float(mb_stats[k]) * n_tok)
                if epoch == 0:  # rollout engine vs learner on the same policy (k3, >= 0 in fp64)
                    mismatch = k3_kl(old_lp.double(), m["rollout_logprobs"].double())
                    stats.mismatch_kl += float((mismatch * m["response_mask"]).sum())

            # 4. clip and step; a non-finite gradient would poison AdamW's moments: skip it
            grad_norm = torch.nn.utils.clip_grad_norm_(params, hp.max_grad_norm)
            if torch.isfinite(grad_norm):
                optimizer.step()
            else:
                stats.skipped_steps += 1
            stats.grad_norm += float(grad_norm)

    epochs = hp.epochs_per_step
    stats.batch_loss /= epochs
    stats.grad_norm /= epochs * len(bounds)
    stats.first_epoch_tokens = stats.tokens / epochs
    stats.lr = float(optimizer.param_groups[0]["lr"])
    return stats
