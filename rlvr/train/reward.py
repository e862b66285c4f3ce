"""The reward pool: every completion scored by the job's verifiers, off the driver's thread.

The reward of a completion is the weighted sum of its verifiers' scores (``reward.verifiers``
in the job spec); every verdict is kept for the samples view and the per-verifier metrics.
Verifiers run in :class:`verifiers.pool.VerifierPool` worker processes with a per-item
timeout: a verifier that hangs or crashes gives that term a score of 0 with its reason
(``timeout`` / ``error``), never a dead job.

Which verdict decides ``passed`` (the ``accuracy`` metric): the *first* verifier in
``reward.verifiers`` is the task's correctness check; the others (``think_format``...) shape
the reward. A record that names its own ``verifier`` (a mixed dataset) replaces that first
verifier for its row, keeping the weight.

A template that prefills the reasoning (``<think>`` at the end of the prompt, Qwen3- and
DeepSeek-R1-style; :mod:`rlvr.data.chat`) is scored as the model's whole reply: the
verifiers see ``prefill + completion``, so the ``<think>`` the template wrote counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rlvr.config import RewardSpec
from rlvr.data.chat import record_prefill
from rlvr.data.records import PromptRecord
from verifiers import Verdict
from verifiers.base import BadReferenceError
from verifiers.pool import VerifierPool


@dataclass
class Reward:
    """The reward of one completion."""

    total: float  # sum of weight * score over the job's verifiers
    passed: bool  # the first (correctness) verifier's verdict
    scores: dict[str, float] = field(default_factory=dict)  # verifier name -> score
    verdicts: dict[str, Verdict] = field(default_factory=dict)


@dataclass(frozen=True)
class _Term:
    name: str
    weight: float
    options: dict[str, Any]


class RewardPool:
    """Scores completions with the job's verifiers in a process pool.

    Args:
        spec: the job's :class:`rlvr.config.RewardSpec` (verifiers with weights and
            options, ``timeout_s`` per item, ``workers`` processes).

        pool = RewardPool(spec.reward)
        rewards = pool.score(["<think>…</think><answer>4</answer>"], [record])
        pool.close()
    """

    def __init__(self, spec: RewardSpec) -> None:
        self.terms = [_Term(v.name, float(v.weight), dict(v.options)) for v in spec.verifiers]
        if not self.terms:
            raise ValueError("reward.verifiers must name at least one verifier")
        self.timeout_s = float(spec.timeout_s)
        self._pool = VerifierPool(workers=int(spec.workers), timeout_s=self.timeout_s)

    def _terms_for(self, record: PromptRecord) -> list[_Term]:
        own = record.verifier
        if not own or own == self.terms[0].name:
            return self.terms
        return [_Term(own, self.terms[0].weight, {}), *self.terms[1:]]

    def score(self, completions: Sequence[str], records: Sequence[PromptRecord]) -> list[Reward]:
        """One :class:`Reward` per completion; ``records[i]`` holds completion i's reference."""
        if len(completions) != len(records):
            raise ValueError(f"{len(completions)} completions but {len(records)} records")
        items: list[tuple[str, dict[str, Any], str, Any]] = []
        owners: list[tuple[int, _Term]] = []
        for i, (text, record) in enumerate(zip(completions, records, strict=True)):
            text = record_prefill(record) + text  # what the template wrote: "<think>\n"
            for term in self._terms_for(record):
                items.append((term.name, term.options, text, record.reference))
                owners.append((i, term))
        verdicts = self._verify(items)
        rewards = [Reward(0.0, False) for _ in completions]
        for (i, term), verdict in zip(owners, verdicts, strict=True):
            r = rewards[i]
            r.verdicts[term.name] = verdict
            r.scores[term.name] = float(verdict.score)
            r.total += term.weight * float(verdict.score)
        for i, record in enumerate(records):
            first = self._terms_for(record)[0].name
            rewards[i].passed = bool(rewards[i].verdicts[first].passed)
        return rewards

    def _verify(self, items: list[tuple[str, dict[str, Any], str, Any]]) -> list[Verdict]:
        try:
            return self._pool.verify_many(items)
        except BadReferenceError:
            # One malformed reference (data validation missed it): score the items one by
            # one so only that row gets 0, with the reason, and the step goes on.
            out: list[Verdict] = []
            for item in items:
                try:
                    out += self._pool.verify_many([item])
                except BadReferenceError as exc:
                    out.append(Verdict(0.0, False, "bad_reference", {"error": str(exc)}))
            return out

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> RewardPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
