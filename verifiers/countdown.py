"""The countdown verifier: does the completion's arithmetic reach the target?

The Countdown game (TinyZero, "Countdown-Tasks-3to4"): given numbers and a target, write
an expression with ``+ - * /`` and parentheses that uses each given number at most once
and equals the target. The expression is parsed with :mod:`ast` and evaluated exactly
with :class:`fractions.Fraction` by walking the tree; nothing is ever ``eval``-ed, and
anything but numbers, the four operators and parentheses is rejected.

Where the expression is: after ``</think>``, the last ``<answer>…</answer>``, else the
last ``\\boxed{…}``, else the last line that contains a digit. ``(3 + 4) * 5 = 35`` is
read as ``(3 + 4) * 5`` (the side of an ``=`` that uses the given numbers).
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from fractions import Fraction
from typing import Any, ClassVar

from verifiers.base import BadReferenceError, Verdict, Verifier, answer_tag, split_think

_MAX_EXPRESSION_CHARS = 1000
_SYMBOLS = {
    "\u00d7": "*", "\u00f7": "/", "\u2212": "-", "\u2013": "-", "\u22c5": "*", "\u00b7": "*",
    "\\times": "*", "\\cdot": "*", "\\div": "/", "\\left": "", "\\right": "", "{": "(", "}": ")",
    "[": "(", "]": ")",
}  # fmt: skip
_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}


class _Invalid(Exception):
    """The expression is not countdown arithmetic (the message says why)."""


class CountdownVerifier(Verifier):
    """Arithmetic puzzles: reach ``target`` from ``numbers`` with + - * / (each number once).

    Args:
        use_all: every given number must be used (default: each at most once).
        format_score: score of a well-formed expression over the allowed numbers that
            misses the target (a shaping reward; 0 by default, TinyZero used 0.1).
    """

    name: ClassVar[str] = "countdown"
    description: ClassVar[str] = (
        "Countdown arithmetic: the answer (after </think>: <answer>…</answer>, else the last "
        "\\boxed{}, else the last line with a digit) is an expression with + - * / and "
        "parentheses over the given numbers, each used at most once, equal to the target. "
        "Parsed with ast, evaluated exactly; never eval-ed."
    )
    reference_format: ClassVar[str] = '{"numbers": [list of integers], "target": integer}'

    def __init__(self, use_all: bool = False, format_score: float = 0.0):
        if not isinstance(use_all, bool):
            raise ValueError(f"countdown verifier: use_all must be true or false, got {use_all!r}")
        if isinstance(format_score, bool) or not isinstance(format_score, int | float):
            raise ValueError(
                f"countdown verifier: format_score must be a number, got {format_score!r}"
            )
        if not 0.0 <= format_score < 1.0:
            raise ValueError(
                f"countdown verifier: format_score must be in [0, 1), got {format_score!r}"
            )
        self.use_all = use_all
        self.format_score = float(format_score)

    def check_reference(self, reference: Any) -> None:
        _numbers_and_target(reference)

    def verify(self, completion: str, reference: Any) -> Verdict:
        numbers, target = _numbers_and_target(reference)
        expression = _find_expression(completion if isinstance(completion, str) else "", numbers)
        if expression is None:
            return Verdict(0.0, False, "no_answer", {"why": "no arithmetic expression found"})
        details: dict[str, Any] = {"expression": expression[:200]}
        try:
            value, used = _evaluate(expression)
        except _Invalid as exc:
            details["why"] = str(exc)
            return Verdict(0.0, False, "parse_error", details)
        details["value"] = str(value)
        details["numbers_used"] = used
        missing = Counter(used) - Counter(numbers)
        if missing:
            details["why"] = f"uses numbers not given (or too often): {sorted(missing.elements())}"
            return Verdict(0.0, False, "mismatch", details)
        if self.use_all and Counter(used) != Counter(numbers):
            details["why"] = (
                f"must use every number: {sorted((Counter(numbers) - Counter(used)).elements())} unused"
            )
            return Verdict(self.format_score, False, "mismatch", details)
        if value != target:
            details["why"] = f"evaluates to {value}, not {target}"
            return Verdict(self.format_score, False, "mismatch", details)
        return Verdict(1.0, True, "ok", details)


def _numbers_and_target(reference: Any) -> tuple[list[int], int]:
    hint = 'countdown reference must be {"numbers": [integers], "target": integer}'
    if not isinstance(reference, dict):
        raise BadReferenceError(f"{hint}, got {type(reference).__name__}")
    numbers, target = reference.get("numbers"), reference.get("target")
    if (
        not isinstance(numbers, list)
        or not numbers
        or not all(isinstance(n, int) and not isinstance(n, bool) for n in numbers)
    ):
        raise BadReferenceError(
            f'{hint}: "numbers" must be a non-empty list of integers, got {numbers!r}'
        )
    if isinstance(target, float) and target.is_integer():
        target = int(target)
    if not isinstance(target, int) or isinstance(target, bool):
        raise BadReferenceError(f'{hint}: "target" must be an integer, got {target!r}')
    return numbers, target


def _find_expression(completion: str, numbers: list[int]) -> str | None:
    if "<think>" in completion and "</think>" not in completion:
        return None  # still reasoning: no answer yet
    _, tail = split_think(completion)
    span = answer_tag(tail)
    if span is None:
        boxed = re.findall(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}", tail)
        if boxed:
            span = boxed[-1]
        else:
            lines = [line for line in tail.splitlines() if re.search(r"\d", line)]
            span = lines[-1] if lines else None
    if span is None or not span.strip():
        return None
    for symbol, replacement in _SYMBOLS.items():
        span = span.replace(symbol, replacement)
    span = span.strip().strip("$").strip().rstrip(".")
    # "(3 + 4) * 5 = 35": keep the side that uses the most of the given numbers.
    sides = [side.strip() for side in span.split("=") if side.strip()]
    if not sides:
        return None
    given = set(numbers)
    return max(sides, key=lambda s: sum(int(n) in given for n in re.findall(r"\d+", s)))


def _evaluate(expression: str) -> tuple[Fraction, list[int]]:
    """Exact value of ``expression`` and the numbers it uses; :class:`_Invalid` otherwise."""
    if len(expression) > _MAX_EXPRESSION_CHARS:
        raise _Invalid(f"expression longer than {_MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise _Invalid(f"not an arithmetic expression: {type(exc).__name__}") from None
    used: list[int] = []

    def walk(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            used.append(node.value)
            return Fraction(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Add):
                return left + right
            if isinstance(node.op, ast.Sub):
                return left - right
            if isinstance(node.op, ast.Mult):
                return left * right
            if right == 0:
                raise _Invalid("division by zero")
            return left / right
        what = (
            type(node.op).__name__
            if isinstance(node, ast.BinOp | ast.UnaryOp)
            else type(node).__name__
        )
        raise _Invalid(f"only integers, + - * / and parentheses are allowed (found {what})")

    try:
        return walk(tree.body), used
    except RecursionError:
        raise _Invalid("expression nested too deeply") from None
