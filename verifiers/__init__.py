"""Verifiers: score a model completion against a reference (math, code, format, countdown, plugins).

    >>> from verifiers import get_verifier
    >>> get_verifier("math").verify("<think>2+2</think> <answer>4</answer>", "4").passed
    True

Importable without torch or Ray. Verifiers that can hang (math: sympy) run in worker
processes with a hard per-item timeout; see :class:`verifiers.pool.VerifierPool`.
"""

from verifiers.base import BadReferenceError, Verdict, Verifier, answer_tag, split_think
from verifiers.pool import VerifierPool
from verifiers.registry import (
    UnknownVerifierError,
    VerifierInfo,
    get_verifier,
    list_verifiers,
    register_verifier,
)

__all__ = [
    "BadReferenceError",
    "UnknownVerifierError",
    "Verdict",
    "Verifier",
    "VerifierInfo",
    "VerifierPool",
    "answer_tag",
    "get_verifier",
    "list_verifiers",
    "register_verifier",
    "split_think",
]
