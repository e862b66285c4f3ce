"""The verifier contract: a completion and a reference in, a :class:`Verdict` out.

Kept free of torch and Ray so that verifiers import anywhere (reward workers, the API,
a user's laptop).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class Verdict:
    """How right one completion is.

    Attributes:
        score: reward in [0, 1].
        passed: whether the completion counts as correct (feeds ``accuracy``).
        reason: a short machine-readable cause when not passed (``no_answer``,
            ``parse_error``, ``mismatch``, ``timeout``, ``error``...), ``"ok"`` when passed.
        details: verifier-specific facts (extracted answer, per-test outcomes, ...).
    """

    score: float
    passed: bool
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.score) <= 1.0:
            raise ValueError(f"Verdict.score must be in [0, 1], got {self.score!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class BadReferenceError(ValueError):
    """A reference that a verifier cannot use (wrong type, missing keys)."""


class Verifier(ABC):
    """Base class of every verifier, built-in or plugin.

    Subclasses set ``name``, ``description`` and ``reference_format`` (shown by
    ``list_verifiers()``, ``GET /v1/verifiers`` and ``rlvr verify --help``) and implement
    :meth:`verify`. ``verify`` must never raise for a bad *completion* (return a failing
    Verdict with a reason instead); it raises :class:`BadReferenceError` for a bad *reference*,
    which is the caller's input error.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    reference_format: ClassVar[str] = ""
    # The same (completion, reference) always gets the same verdict: a pool verifies
    # identical items of one call once (a GRPO group often samples one completion several
    # times). A verifier whose verdict may differ between two runs (one that samples a
    # judge, say) sets False, and every item is verified on its own.
    deterministic: ClassVar[bool] = True

    @abstractmethod
    def verify(self, completion: str, reference: Any) -> Verdict:
        """Score one completion against its reference."""

    def check_reference(self, reference: Any) -> None:  # noqa: B027 - optional hook
        """Raise :class:`BadReferenceError` if ``reference`` is malformed. Default: accept."""

    def verify_batch(self, items: Sequence[tuple[str, Any]]) -> list[Verdict]:
        """Score many (completion, reference) pairs. Subclasses override to parallelise."""
        return [self.verify(c, r) for c, r in items]


_THINK_CLOSE = "</think>"
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def split_think(completion: str) -> tuple[str | None, str]:
    """Split a completion into (think block, text after it).

    The answer must come after the reasoning: only text after the *last* ``</think>``
    counts as the answer part. Without ``</think>`` the think block is ``None`` and the whole
    completion is the answer part.
    """
    if _THINK_CLOSE in completion:
        head, _, tail = completion.rpartition(_THINK_CLOSE)
        think = head.split("<think>", 1)[1] if "<think>" in head else head
        return think, tail
    return None, completion


def answer_tag(text: str) -> str | None:
    """The content of the last ``<answer>…</answer>`` in ``text``, if any."""
    found = _ANSWER_RE.findall(text)
    return found[-1].strip() if found else None
