"""Built-in Countdown problems (``builtin:countdown``): reach a target with given numbers.

Each problem is made by combining its numbers with random operations until one value is
left, so every problem has a solution that uses each number exactly once. The reference
is ``{"numbers": [...], "target": n}``, scored by the ``countdown`` verifier; the answer is
an expression such as ``(25+3)*2``.

:meth:`CountdownProblem.completion` writes the solution found at generation time, one
operation per line, e.g.::

    <think>25+3=28
    28*2=56</think>
    <answer>(25+3)*2</answer>
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from rlvr.data.records import PromptRecord, in_split

OPS = "+-*/"


@dataclass(frozen=True)
class CountdownProblem:
    numbers: tuple[int, ...]
    target: int
    steps: tuple[str, ...]  # "25+3=28", ... (the solution found when generating)
    expression: str  # "(25+3)*2"

    @property
    def key(self) -> str:
        return f"{sorted(self.numbers)}->{self.target}"

    def prompt(self) -> str:
        nums = ", ".join(str(x) for x in self.numbers)
        return (
            f"Using the numbers [{nums}], make {self.target}. "
            "Use each number exactly once, with + - * / and parentheses."
        )

    def reference(self) -> dict:
        return {"numbers": list(self.numbers), "target": self.target}

    def completion(self) -> str:
        """The full ``think`` completion (without the end-of-turn token)."""
        return f"<think>{chr(10).join(self.steps)}</think>\n<answer>{self.expression}</answer>"

    def to_record(self, id: str) -> PromptRecord:  # noqa: A002 - the field's name
        return PromptRecord(prompt=self.prompt(), reference=self.reference(), id=id)


def _combine(rng: random.Random, x: tuple[int, str], y: tuple[int, str], ops: str):
    """One random valid operation on two (value, expression) pairs, or None."""
    (a, ea), (b, eb) = (x, y) if x[0] >= y[0] else (y, x)
    choices = [op for op in ops if not (op == "/" and (b in (0, 1) or a % b))]
    if "-" in choices and a == b:
        choices.remove("-")  # 0 is a dead end
    if not choices:
        return None
    op = rng.choice(choices)
    value = {"+": a + b, "-": a - b, "*": a * b, "/": a // b if b else 0}[op]

    def wrap(e: str) -> str:
        return e if e.isdigit() else f"({e})"

    return value, f"{wrap(ea)}{op}{wrap(eb)}", f"{a}{op}{b}={value}"


def _one(rng: random.Random, count: int, max_number: int, max_target: int, ops: str):
    numbers = tuple(rng.randint(1, max_number) for _ in range(count))
    pool = [(x, str(x)) for x in numbers]
    steps = []
    while len(pool) > 1:
        i, j = sorted(rng.sample(range(len(pool)), 2))
        made = _combine(rng, pool[i], pool[j], ops)
        if made is None:
            return None
        value, expr, step = made
        steps.append(step)
        pool = [p for k, p in enumerate(pool) if k not in (i, j)] + [(value, expr)]
    target, expression = pool[0]
    if not 1 <= target <= max_target or target in numbers:
        return None  # out of range, or trivially one of the inputs
    return CountdownProblem(numbers, target, tuple(steps), expression)


def generate(
    n: int,
    *,
    seed: int = 0,
    numbers: int = 3,
    max_number: int = 20,
    max_target: int = 100,
    ops: str = OPS,
    split: str = "all",
) -> list[CountdownProblem]:
    """``n`` distinct solvable problems, deterministic in ``seed``."""
    if not 2 <= numbers <= 6:
        raise ValueError("numbers must be in 2..6")
    if not ops or any(op not in OPS for op in ops):
        raise ValueError(f"ops must be a non-empty subset of {OPS!r}")
    rng = random.Random(f"countdown/{seed}/{numbers}/{max_number}/{max_target}/{ops}/{split}")
    seen: set[str] = set()
    out: list[CountdownProblem] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 200 * n + 10_000:
            raise ValueError(
                f"found only {len(out)} distinct problems of {n}: raise max_number or "
                "max_target, or ask for fewer"
            )
        p = _one(rng, numbers, max_number, max_target, ops)
        if p is not None and p.key not in seen and in_split(p.key, split):
            seen.add(p.key)
            out.append(p)
    return out
