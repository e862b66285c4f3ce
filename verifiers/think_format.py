"""The think-format verifier: is the completion shaped ``<think>…</think> <answer>…</answer>``?

Used as a small auxiliary reward next to a correctness verifier, so that the policy
keeps reasoning before it answers. Four checks, 0.25 each (the score is their sum):

=================  ==============================================================
``think``          exactly one ``<think>`` … ``</think>`` pair, opening the
                   completion (leading whitespace allowed)
``think_nonempty`` the think block holds more than whitespace
``answer``         a non-empty answer after ``</think>``: one ``<answer>…</answer>``
                   (or, with ``answer="any"``, any text)
``nothing_after``  only whitespace after ``</answer>`` (vacuous with ``answer="any"``)
=================  ==============================================================

``passed`` needs all four. The answer is looked for after the last ``</think>`` (in the
whole completion when there is none; nowhere when a ``<think>`` is never closed). A
check that depends on a failed one fails too (no think block: ``think_nonempty`` fails;
no answer: ``nothing_after`` fails). So: no structure at all scores 0; a clean answer
without reasoning 0.5; a malformed think block (two of them) before a clean answer
0.5; an empty think block 0.75. Reasons: ``ok``, ``no_answer`` (the answer check
failed), ``parse_error`` (a think check or ``nothing_after`` failed).
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from verifiers.base import Verdict, Verifier

_CHECKS = ("think", "think_nonempty", "answer", "nothing_after")
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


class ThinkFormatVerifier(Verifier):
    """Reasoning format: one non-empty think block, then the answer, then nothing.

    Args:
        answer: ``"tag"`` (default) requires ``<answer>…</answer>`` after the think
            block; ``"any"`` accepts any non-blank text there (e.g. ``\\boxed{}`` style).
    """

    name: ClassVar[str] = "think_format"
    description: ClassVar[str] = (
        "Reasoning format: exactly one non-empty <think>…</think> opening the completion, "
        "then a non-empty <answer>…</answer>, then nothing. Score = 0.25 per check passed "
        "(think, think_nonempty, answer, nothing_after)."
    )
    reference_format: ClassVar[str] = "none (the reference is ignored; pass null)"

    def __init__(self, answer: str = "tag"):
        if answer not in ("tag", "any"):
            raise ValueError(
                f'think_format verifier: answer must be "tag" or "any", got {answer!r}'
            )
        self.answer = answer

    def verify(self, completion: str, reference: Any = None) -> Verdict:
        checks = dict.fromkeys(_CHECKS, False)
        text = completion if isinstance(completion, str) else ""
        think_chars = 0
        head, closed, after = text.rpartition("</think>")
        if not closed:
            # No reasoning block closed: the answer may still stand alone (partial
            # credit), unless a block was opened and never closed (all of it is reasoning).
            head, after = "", ("" if "<think>" in text else text)
        if (
            text.count("<think>") == 1
            and text.count("</think>") == 1
            and text.lstrip().startswith("<think>")
        ):
            checks["think"] = True
            think_chars = len(head.split("<think>", 1)[1].strip())
            checks["think_nonempty"] = think_chars > 0
        self._check_answer(after, checks)
        score = sum(checks.values()) / len(checks)
        failed = [name for name, ok in checks.items() if not ok]
        if not failed:
            reason = "ok"
        elif not checks["answer"]:
            reason = "no_answer"
        else:
            reason = "parse_error"
        return Verdict(
            score,
            not failed,
            reason,
            {"checks": checks, "failed": failed, "think_chars": think_chars},
        )

    def _check_answer(self, after: str, checks: dict[str, bool]) -> None:
        if self.answer == "any":
            checks["answer"] = checks["nothing_after"] = bool(after.strip())
            return
        answers = _ANSWER_RE.findall(after)
        if len(answers) == 1 and answers[0].strip():
            checks["answer"] = True
            checks["nothing_after"] = not after.rpartition("</answer>")[2].strip()
