"""Built-in Countdown problems (``builtin:countdown``): reach a target with given numbers.

Each problem is made by combining its numbers with random operations until one value is
left, so every problem is solvable. The reference is ``{"numbers": [...], "target": n}``,
scored by the ``countdown`` verifier (each number at most once); the answer is an
expression such as ``(25+3)*2``.

:meth:`CountdownProblem.completion` writes one worked solution, one operation per line:
for up to 4 numbers the canonical one (:func:`canonical_solution`: fewest steps, fixed
search order), e.g.::

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
            "Use + - * / and parentheses, and each number at most once."
        )

    def reference(self) -> dict:
        return {"numbers": list(self.numbers), "target": self.target}

    def completion(self) -> str:
        """The full ``think`` completion (without the end-of-turn token)."""
        return f"<think>{chr(10).join(self.steps)}</think>\n<answer>{self.expression}</answer>"

    def to_record(self, id: str) -> PromptRecord:
        return PromptRecord(prompt=self.prompt(), reference=self.reference(), id=id)


_OP_ORDER = "+*-/"  # the order the canonical solution tries operations in
_CANONICAL_UP_TO = 4  # numbers; beyond, the search is too big and the made solution is kept


def _apply(op: str, a: int, b: int) -> int | None:
    """``a op b`` for ``a >= b`` if it is a useful countdown step (no 0, no /1, exact /)."""
    if op == "+":
        return a + b
    if op == "*":
        return a * b
    if op == "-":
        return a - b if a > b else None
    return a // b if b > 1 and a % b == 0 else None


def _wrap(e: str) -> str:
    return e if e.isdigit() else f"({e})"


def _step(x: tuple[int, str], y: tuple[int, str], op: str):
    """Combine two (value, expression) pairs: ((value, expression), "a op b=value") or None."""
    (a, ea), (b, eb) = (x, y) if x[0] >= y[0] else (y, x)
    value = _apply(op, a, b)
    if value is None:
        return None
    return (value, f"{_wrap(ea)}{op}{_wrap(eb)}"), f"{a}{op}{b}={value}"


def _search(
    pool: list[tuple[int, str]], target: int, ops: str, depth: int, steps: list[str]
) -> tuple[list[str], str] | None:
    """Depth-first, fixed order: the first way to make ``target`` in ``depth`` more steps."""
    if depth == 0:
        return None
    for i in range(len(pool)):
        for j in range(i + 1, len(pool)):
            for op in (o for o in _OP_ORDER if o in ops):
                made = _step(pool[i], pool[j], op)
                if made is None:
                    continue
                (value, expr), step = made
                if value == target:
                    return [*steps, step], expr
                rest = [p for k, p in enumerate(pool) if k not in (i, j)] + [(value, expr)]
                found = _search(rest, target, ops, depth - 1, [*steps, step])
                if found:
                    return found
    return None


def canonical_solution(
    numbers: tuple[int, ...], target: int, ops: str = OPS
) -> tuple[list[str], str] | None:
    """The fewest-steps solution that a fixed-order search finds first: (steps, expression).

    One problem, one worked solution: a model learns a function, not a guess between
    equally valid answers. ``None`` if there is none.
    """
    pool = [(x, str(x)) for x in sorted(numbers, reverse=True)]
    for depth in range(1, len(numbers)):
        found = _search(pool, target, ops, depth, [])
        if found:
            return found
    return None


def _one(rng: random.Random, count: int, max_number: int, max_target: int, ops: str):
    numbers = tuple(rng.randint(1, max_number) for _ in range(count))
    pool = [(x, str(x)) for x in numbers]
    steps = []
    while len(pool) > 1:  # random steps until one value is left: a solvable problem
        i, j = sorted(rng.sample(range(len(pool)), 2))
        made = _step(pool[i], pool[j], rng.choice(ops))
        if made is None:
            return None
        steps.append(made[1])
        pool = [p for k, p in enumerate(pool) if k not in (i, j)] + [made[0]]
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
    allow_fewer: bool = False,
) -> list[CountdownProblem]:
    """``n`` distinct solvable problems, deterministic in ``seed``.

    Raises ValueError when the space runs out first, unless ``allow_fewer``.
    """
    if not 2 <= numbers <= 6:
        raise ValueError("numbers must be in 2..6")
    if not ops or any(op not in OPS for op in ops):
        raise ValueError(f"ops must be a non-empty subset of {OPS!r}")
    rng = random.Random(f"countdown/{seed}/{numbers}/{max_number}/{max_target}/{ops}/{split}")
    seen: set[str] = set()
    out: list[CountdownProblem] = []
    stalled = 0  # attempts since the last new problem
    while len(out) < n:
        if stalled > 20_000:
            if allow_fewer:
                break
            raise ValueError(
                f"found only {len(out)} distinct problems of {n}: raise max_number or "
                "max_target, or ask for fewer"
            )
        p = _one(rng, numbers, max_number, max_target, ops)
        if p is not None and p.key not in seen and in_split(p.key, split):
            seen.add(p.key)
            if numbers <= _CANONICAL_UP_TO:  # the worked solution: the canonical one
                solution = canonical_solution(p.numbers, p.target, ops)
                assert solution is not None  # _one built the target from these numbers
                steps, expression = solution
                p = CountdownProblem(p.numbers, p.target, tuple(steps), expression)
            out.append(p)
            stalled = 0
        else:
            stalled += 1
    return out
