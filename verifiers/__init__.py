"""Verifiers: score a model completion against a reference (math, code, format, countdown, plugins).

    >>> from verifiers import get_verifier
    >>> get_verifier("math").verify("<think>2+2</think> <answer>4</answer>", "4").passed
    True

Importable without torch or Ray.
"""

from verifiers.base import ReferenceError, Verdict, Verifier, answer_tag, split_think
from verifiers.registry import (
    UnknownVerifierError,
    VerifierInfo,
    get_verifier,
    list_verifiers,
    register_verifier,
)

__all__ = [
    "ReferenceError",
    "UnknownVerifierError",
    "Verdict",
    "Verifier",
    "VerifierInfo",
    "answer_tag",
    "get_verifier",
    "list_verifiers",
    "register_verifier",
    "split_think",
]
