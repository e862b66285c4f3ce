"""Engine-agnostic pieces shared by the HF and vLLM rollouts: request checks, spreading
prompts over replicas, stripping control tokens, waiting on actors with a timeout."""

from __future__ import annotations

from collections.abc import Sequence

from rlvr.rollout.base import SamplingConfig

# Special tokens kept in Completion.text: verifiers read the reasoning/answer markup.
MARKUP_TOKENS = frozenset({"<think>", "</think>", "<answer>", "</answer>"})


def validate_request(prompt_token_ids: Sequence[Sequence[int]], sampling: SamplingConfig) -> None:
    """Raise ValueError naming the bad field (before anything reaches an engine)."""
    if sampling.n < 1:
        raise ValueError(f"sampling.n must be >= 1 (completions per prompt), got {sampling.n}")
    if sampling.max_new_tokens < 1:
        raise ValueError(f"sampling.max_new_tokens must be >= 1, got {sampling.max_new_tokens}")
    if sampling.temperature < 0:
        raise ValueError(
            f"sampling.temperature must be >= 0 (0 = greedy), got {sampling.temperature}"
        )
    if not 0 < sampling.top_p <= 1:
        raise ValueError(f"sampling.top_p must be in (0, 1], got {sampling.top_p}")
    if any(not isinstance(s, str) or not s for s in sampling.stop):
        raise ValueError(f"sampling.stop must be non-empty strings, got {sampling.stop!r}")
    for i, ids in enumerate(prompt_token_ids):
        if len(ids) == 0:
            raise ValueError(
                f"prompt {i} has no tokens (an empty prompt cannot be decoded; did the "
                "tokenizer drop every character of it?)"
            )
        bad = [t for t in ids if not isinstance(t, int) or t < 0]
        if bad:
            raise ValueError(f"prompt {i} has invalid token ids {bad[:5]} (need ints >= 0)")


def split_evenly(num_items: int, num_parts: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, end)`` slices of sizes differing by at most one (empty ones kept)."""
    if num_parts < 1:
        raise ValueError(f"num_parts must be >= 1, got {num_parts}")
    q, r = divmod(num_items, num_parts)
    spans, start = [], 0
    for p in range(num_parts):
        end = start + q + (1 if p < r else 0)
        spans.append((start, end))
        start = end
    return spans


def strip_tokens(text: str, tokens: frozenset[str] | set[str]) -> str:
    """``text`` without any occurrence of ``tokens`` (control tokens such as ``<|im_end|>``)."""
    for t in sorted(tokens, key=len, reverse=True):  # longest first: no partial leftovers
        if t:
            text = text.replace(t, "")
    return text


def wait_all(refs: list, timeout_s: float, what: str) -> list:
    """``ray.get`` of every ref, or TimeoutError naming ``what`` after ``timeout_s``."""
    import ray

    try:
        return ray.get(refs, timeout=timeout_s)
    except ray.exceptions.GetTimeoutError as e:
        raise TimeoutError(f"{what} did not finish within {timeout_s:.0f} s") from e
