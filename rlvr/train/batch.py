"""The learner's batches: prompts + sampled completions as padded arrays, and the
micro-batches one gradient step is accumulated over.

A batch row is one completion: its prompt left-padded to the batch's longest prompt P, its
response right-padded to the longest response R, so every response starts at column P.
Micro-batches are runs of ``micro_batch_size`` rows, or (``micro_batch_tokens``) rows sorted
by length and packed up to a budget of padded tokens; each is trimmed to its own longest
prompt and response, so short sequences do not pay for the batch's longest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from rlvr.rollout.base import Completion


def make_train_batch(
    prompt_token_ids: Sequence[Sequence[int]],
    completions: Sequence[Completion],
    advantages: Sequence[float] | torch.Tensor,
    pad_id: int,
) -> dict[str, np.ndarray]:
    """Padded arrays for the learner, one row per completion.

    Returns ``input_ids`` / ``attention_mask`` ``[B, P + R]`` (prompt left-padded to P,
    response right-padded to R), ``response_mask`` / ``rollout_logprobs`` ``[B, R]`` and
    ``advantages`` ``[B]``. ``response_mask`` is 1 on the tokens the model sampled: a tool's
    output inside a response (``Completion.model_mask``) is attended to but is 0 there, so it
    counts in no loss, ratio, KL or token statistic.
    """
    if len(completions) != len(advantages):
        raise ValueError(f"{len(completions)} completions but {len(advantages)} advantages")
    if not completions:
        raise ValueError("an empty batch cannot be trained on")
    prompts = [prompt_token_ids[c.prompt_index] for c in completions]
    p_len = max(len(p) for p in prompts)
    r_len = max(max(len(c.token_ids) for c in completions), 1)
    b = len(completions)
    input_ids = np.full((b, p_len + r_len), pad_id, dtype=np.int64)
    attention = np.zeros((b, p_len + r_len), dtype=np.int64)
    response_mask = np.zeros((b, r_len), dtype=np.float32)
    rollout_lp = np.zeros((b, r_len), dtype=np.float32)
    for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        n = len(c.token_ids)
        if len(c.logprobs) != n:
            raise ValueError(f"completion {i} has {n} tokens but {len(c.logprobs)} logprobs")
        input_ids[i, p_len - len(p) : p_len] = p
        input_ids[i, p_len : p_len + n] = c.token_ids
        attention[i, p_len - len(p) : p_len + n] = 1
        response_mask[i, :n] = 1.0
        if c.model_mask is not None:  # tool output: context, not actions (docs/tools.md)
            if len(c.model_mask) != n:
                raise ValueError(f"completion {i} has {n} tokens but {len(c.model_mask)} mask")
            response_mask[i, :n] = c.model_mask
        rollout_lp[i, :n] = c.logprobs
    adv = np.asarray(
        advantages.tolist() if isinstance(advantages, torch.Tensor) else advantages,
        dtype=np.float32,
    )
    return {
        "input_ids": input_ids,
        "attention_mask": attention,
        "response_mask": response_mask,
        "rollout_logprobs": rollout_lp,
        "advantages": adv,
    }


def slice_batch(batch: dict[str, Any], start: int, end: int) -> dict[str, Any]:
    """Rows ``start:end`` of every array of the batch."""
    return {k: v[start:end] for k, v in batch.items()}


def plan_micro_batches(
    prompt_lens: Sequence[int],
    response_lens: Sequence[int],
    *,
    max_seqs: int,
    max_tokens: int | None = None,
) -> list[list[int]]:
    """The rows of each micro-batch.

    Without ``max_tokens``: consecutive runs of ``max_seqs`` rows, in batch order. With it:
    rows sorted longest first (prompt + response, ties in batch order) and packed greedily
    while ``rows x (longest prompt + longest response)`` stays within ``max_tokens``: the
    padded size the forward pass computes once a micro-batch is trimmed to its own longest
    prompt and response. A row longer than the budget gets a micro-batch of its own;
    ``max_seqs`` does not apply.
    """
    n = len(prompt_lens)
    if len(response_lens) != n:
        raise ValueError(f"{n} prompt lengths but {len(response_lens)} response lengths")
    if max_tokens is None:
        if max_seqs < 1:
            raise ValueError(f"max_seqs must be >= 1, got {max_seqs}")
        return [list(range(s, min(s + max_seqs, n))) for s in range(0, n, max_seqs)]
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    order = sorted(range(n), key=lambda i: -(prompt_lens[i] + max(response_lens[i], 1)))
    plan: list[list[int]] = []
    rows: list[int] = []
    p_max = r_max = 0
    for i in order:
        p, r = max(p_max, prompt_lens[i]), max(r_max, response_lens[i], 1)
        if rows and (len(rows) + 1) * (p + r) > max_tokens:
            plan.append(rows)
            rows, p, r = [], prompt_lens[i], max(response_lens[i], 1)
        rows.append(i)
        p_max, r_max = p, r
    if rows:
        plan.append(rows)
    return plan


def row_lengths(batch: dict[str, torch.Tensor]) -> tuple[list[int], list[int]]:
    """(prompt tokens, response tokens) of every row of a :func:`make_train_batch` batch."""
    r = batch["response_mask"].shape[1]
    prompt = batch["attention_mask"][:, :-r].sum(-1) if r else batch["attention_mask"].sum(-1)
    # from the attention mask: a response's masked tool tokens still take their columns
    response = batch["attention_mask"][:, -r:].sum(-1) if r else prompt * 0
    return prompt.long().tolist(), response.long().tolist()


def micro_batch(batch: dict[str, torch.Tensor], rows: list[int]) -> dict[str, torch.Tensor]:
    """``rows`` of the batch, trimmed to their own longest prompt and response.

    The columns dropped are padding in every one of these rows (masked out, position ids
    count real tokens only), so logprobs are unchanged; the forward pass gets cheaper.
    """
    first = next(iter(batch.values()))
    index = torch.as_tensor(rows, dtype=torch.long, device=first.device)
    m = {k: v.index_select(0, index) for k, v in batch.items()}
    r_pad = m["response_mask"].shape[1]
    p_pad = m["input_ids"].shape[1] - r_pad
    plens, rlens = row_lengths(m)
    p, r = max(plens), max(max(rlens), 1)
    for k in ("input_ids", "attention_mask"):
        m[k] = m[k][:, p_pad - p : p_pad + r]
    for k in ("response_mask", "rollout_logprobs"):
        m[k] = m[k][:, :r]
    return m


def split_micro_batches(
    batch: dict[str, torch.Tensor], max_seqs: int, max_tokens: int | None = None
) -> list[dict[str, torch.Tensor]]:
    """The micro-batches of a (tensor) batch, as :func:`plan_micro_batches` plans them."""
    prompt_lens, response_lens = row_lengths(batch)
    plan = plan_micro_batches(prompt_lens, response_lens, max_seqs=max_seqs, max_tokens=max_tokens)
    return [micro_batch(batch, rows) for rows in plan]


__all__ = [
    "make_train_batch",
    "micro_batch",
    "plan_micro_batches",
    "row_lengths",
    "slice_batch",
    "split_micro_batches",
]
