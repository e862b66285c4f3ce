"""Built-in arithmetic problems (``builtin:arithmetic``) and their worked solutions.

Problems are ``a op b`` with ``op`` in ``+ - *`` and operands of exactly ``digits`` digits
(0-9 for ``digits=1``); subtraction keeps ``a >= b`` so answers are never negative. The
reference is the answer as a string, scored by the ``math`` verifier.

:meth:`ArithmeticProblem.completion` writes the pencil-and-paper solution a tiny model is
warm-started on, e.g. for 47 + 38::

    <think>7+8=15 carry 1
    4+3+1=8
    result 85</think>
    <answer>85</answer>
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from rlvr.data.records import PromptRecord, in_split

OPS = "+-*"
MAX_DIGITS = 9
_ENUMERATE_UP_TO = 300_000  # below this many problems, enumerate the split and sample exactly


@dataclass(frozen=True)
class ArithmeticProblem:
    a: int
    op: str
    b: int

    @property
    def key(self) -> str:
        return f"{self.a}{self.op}{self.b}"

    @property
    def answer(self) -> int:
        if self.op == "+":
            return self.a + self.b
        if self.op == "-":
            return self.a - self.b
        return self.a * self.b

    def prompt(self) -> str:
        return f"What is {self.a} {self.op} {self.b}?"

    def trace(self) -> str:
        """Column-by-column working, the way it is done by hand."""
        if self.op == "+":
            lines = _addition_lines(self.a, self.b)
        elif self.op == "-":
            lines = _subtraction_lines(self.a, self.b)
        else:
            lines = _multiplication_lines(self.a, self.b)
        return "\n".join([*lines, f"result {self.answer}"])

    def completion(self) -> str:
        """The full ``think`` completion (without the end-of-turn token)."""
        return f"<think>{self.trace()}</think>\n<answer>{self.answer}</answer>"

    def to_record(self, id: str) -> PromptRecord:
        return PromptRecord(prompt=self.prompt(), reference=str(self.answer), id=id)


def _digits_lsb_first(x: int, width: int) -> list[int]:
    return [(x // 10**i) % 10 for i in range(width)]


def _addition_lines(a: int, b: int) -> list[str]:
    width = max(len(str(a)), len(str(b)))
    lines, carry = [], 0
    for da, db in zip(_digits_lsb_first(a, width), _digits_lsb_first(b, width), strict=True):
        s = da + db + carry
        line = f"{da}+{db}{'+1' if carry else ''}={s}"
        carry = 1 if s >= 10 else 0
        lines.append(line + (" carry 1" if carry else ""))
    return lines


def _subtraction_lines(a: int, b: int) -> list[str]:
    width = len(str(a))  # a >= b
    lines, borrow = [], 0
    for da, db in zip(_digits_lsb_first(a, width), _digits_lsb_first(b, width), strict=True):
        need = da - borrow < db
        top = da + 10 if need else da
        line = f"{top}{'-1' if borrow else ''}-{db}={top - borrow - db}"
        lines.append(line + (" borrow 1" if need else ""))
        borrow = 1 if need else 0
    return lines


def _multiplication_lines(a: int, b: int) -> list[str]:
    partials, lines = [], []
    for j, db in enumerate(_digits_lsb_first(b, len(str(b)))):
        p = a * db
        partials.append(p * 10**j)
        lines.append(f"{a}*{db}={p}" + (f", shifted {p * 10**j}" if j and p else ""))
    if len(partials) > 1:
        lines.append("+".join(str(p) for p in partials) + f"={sum(partials)}")
    return lines


def _operand_range(digits: int) -> tuple[int, int]:
    return (0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)


def _problem(a: int, op: str, b: int) -> ArithmeticProblem:
    if op == "-" and a < b:
        a, b = b, a
    return ArithmeticProblem(a, op, b)


def generate(
    n: int, *, seed: int = 0, digits: int = 2, ops: str = "+", split: str = "all"
) -> list[ArithmeticProblem]:
    """``n`` distinct problems (fewer distinct than ``n`` only if the space is smaller).

    Deterministic in ``seed``; ``split`` ("all", "train", "test") picks a fixed part of
    the problem space so that test problems never appear in training data.
    """
    if not 1 <= digits <= MAX_DIGITS:
        raise ValueError(f"digits must be in 1..{MAX_DIGITS}")
    if not ops or any(op not in OPS for op in ops):
        raise ValueError(f"ops must be a non-empty subset of {OPS!r}")
    ops = "".join(dict.fromkeys(ops))  # de-duplicate, keep order
    rng = random.Random(f"arithmetic/{seed}/{digits}/{ops}/{split}")
    lo, hi = _operand_range(digits)
    width = hi - lo + 1
    if len(ops) * width * width <= _ENUMERATE_UP_TO:
        space = [
            ArithmeticProblem(a, op, b)
            for op in ops
            for a in range(lo, hi + 1)
            for b in range(lo, hi + 1)
            if not (op == "-" and a < b)
        ]
        space = [p for p in space if in_split(p.key, split)]
        if not space:
            raise ValueError(f"no problems in split {split!r}")
        return rng.sample(space, n) if n <= len(space) else rng.choices(space, k=n)
    seen: set[str] = set()
    out: list[ArithmeticProblem] = []
    while len(out) < n:  # a huge space: rejection-sample distinct problems
        p = _problem(rng.randint(lo, hi), rng.choice(ops), rng.randint(lo, hi))
        if p.key not in seen and in_split(p.key, split):
            seen.add(p.key)
            out.append(p)
    return out
