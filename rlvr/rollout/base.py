"""The rollout engine contract shared by the HF (CPU) and vLLM (GPU) engines.

An engine turns prompt token ids into ``n`` sampled completions each, with the logprob of
every sampled token under the sampling distribution, and accepts new weights from the
learner. Engines run as Ray actors; these types cross the object store, so they are plain
dataclasses of lists.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from rlvr.rollout._common import PendingRollout, ReplicaGroup


@dataclass
class SamplingConfig:
    """How to sample. ``n`` completions per prompt (the GRPO group)."""

    n: int = 1
    max_new_tokens: int = 256
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None


@dataclass
class Completion:
    """One sampled completion of one prompt."""

    prompt_index: int  # index into the prompts passed to generate()
    token_ids: list[int]  # generated tokens only (no prompt), EOS included if produced
    text: str  # decoded generated text, special tokens skipped except <think>/<answer> markup
    logprobs: list[float]  # logprob of each generated token under the sampling distribution
    finish_reason: str  # "stop" (EOS or a stop string) or "length"
    # The engine's weights version when it sampled this (0 = the weights it started with);
    # with weight updates mid-sequence, the version of its first token.
    weights_version: int = 0
    # With weight updates mid-sequence (rollout.mid_sequence_weight_updates): the version of
    # its last token, where newer weights landed while it was sampled; None: no change.
    last_weights_version: int | None = None
    # Tool use (docs/tools.md): which of token_ids the model sampled (False: a tool's output,
    # context that is masked out of the loss, with logprob 0.0). None: every token is the
    # model's (no tools).
    model_mask: list[bool] | None = None
    tool_calls: int = 0  # tools run for this completion
    tool_errors: int = 0  # of which failed (bad input, crash, timeout, unknown tool)
    tool_time_s: float = 0.0  # wall time of its calls, summed
    turns: int = 1  # model turns (1 + the calls whose output it continued after)
    forged_outputs: int = 0  # model-written output blocks stripped from text


class RolloutEngine(Protocol):
    """What the training loop drives: :class:`~rlvr.rollout.hf.HFRollout` and
    :class:`~rlvr.rollout.vllm.VllmRollout` (driver side, several engine actors each)."""

    replicas: ReplicaGroup  # the engine actors (``replicas.engines``: a learner pushes to them)

    def generate(
        self, prompt_token_ids: list[list[int]], sampling: SamplingConfig
    ) -> list[Completion]:
        """``sampling.n`` completions per prompt, ordered by prompt."""

    def submit(self, prompt_token_ids: list[list[int]], sampling: SamplingConfig) -> PendingRollout:
        """Start ``generate`` on the engines and return at once (the async loop)."""

    def load_weights(self, state: Mapping[str, Any], version: int) -> None:
        """Replace the policy weights (names as in the HF model's ``state_dict``)."""

    def weights_version(self) -> int:
        """The version last loaded (0 = the initial checkpoint)."""

    def shutdown(self) -> None:
        """Stop the engine's actors and release what they hold."""
