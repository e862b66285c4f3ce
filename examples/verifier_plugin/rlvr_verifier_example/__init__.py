"""An example rlvr verifier plugin: the ``<answer>`` text must equal the reference.

Useful for tasks whose answer is a word or a label (a city, a class name, "yes"/"no"),
where the math verifier's sympy reading would be wrong. Case and surrounding whitespace
are ignored; runs of inner whitespace count as one space.
"""

from __future__ import annotations

from typing import Any, ClassVar

from verifiers import BadReferenceError, Verdict, Verifier, answer_tag, split_think


class ExactAnswerVerifier(Verifier):
    """The text in ``<answer>…</answer>`` (after ``</think>``) equals the reference.

    Args:
        case_sensitive: compare case too (default: ignore case).
    """

    name: ClassVar[str] = "exact_answer"
    description: ClassVar[str] = (
        "The <answer>…</answer> text after </think> equals the reference, ignoring case "
        "and extra whitespace (example plugin)."
    )
    reference_format: ClassVar[str] = 'the expected answer text, e.g. "Paris"'

    def __init__(self, case_sensitive: bool = False):
        if not isinstance(case_sensitive, bool):
            raise ValueError(
                f"exact_answer: case_sensitive must be true or false, got {case_sensitive!r}"
            )
        self.case_sensitive = case_sensitive

    def check_reference(self, reference: Any) -> None:
        # A bad reference is the caller's error: raise, so that `rlvr verify` exits 2
        # and a job is rejected before it runs.
        if not isinstance(reference, str) or not reference.strip():
            raise BadReferenceError(
                f"exact_answer reference must be a non-empty string, got {reference!r}"
            )

    def verify(self, completion: str, reference: Any) -> Verdict:
        self.check_reference(reference)
        # A bad completion is never an error: it gets a failing verdict with a reason.
        _, after_think = split_think(completion or "")
        answer = answer_tag(after_think)
        if answer is None:
            return Verdict(0.0, False, "no_answer", {"why": "no <answer>…</answer> after </think>"})
        ok = self._normal(answer) == self._normal(reference)
        return Verdict(float(ok), ok, "ok" if ok else "mismatch", {"extracted": answer[:200]})

    def _normal(self, text: str) -> str:
        text = " ".join(text.split())
        return text if self.case_sensitive else text.casefold()
