"""The 44-task code set (tests/data/code_tasks.py): every solution scored as intended.

correct -> 1.0; wrong -> its exact partial score; slow -> a timeout outcome and its score;
hack -> no more than its stated ceiling (0, or what an honest constant answer gets).
All solutions are graded in one ``verify_batch`` through the real bubblewrap sandbox.
"""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import pytest

from sandbox.local import LocalSandbox
from verifiers.code import CodeVerifier

_PATH = Path(__file__).parents[1] / "data" / "code_tasks.py"
_spec = importlib.util.spec_from_file_location("code_tasks", _PATH)
code_tasks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(code_tasks)
TASKS = code_tasks.TASKS
CASES = [
    (t["id"], i, kind)
    for t in TASKS
    for i, (kind, _completion, _score) in enumerate(t["solutions"])
]


def test_task_set_covers_both_formats_and_all_kinds():
    formats = {"stdio" if "tests" in t["reference"] else "function" for t in TASKS}
    kinds = {kind for _, _, kind in CASES}
    assert len(TASKS) >= 40 and formats == {"stdio", "function"}
    assert kinds == {"correct", "wrong", "slow", "hack"}
    assert all(t["solutions"][0][0] == "correct" for t in TASKS)
    assert len({t["id"] for t in TASKS}) == len(TASKS)


@pytest.fixture(scope="module")
def verdicts():
    sb = LocalSandbox(concurrency=8, uid_base=65000 + random.randrange(0, 500) * 16)
    verifier = CodeVerifier(sandbox=sb, timeout_s=1.0)
    items, keys = [], []
    for t in TASKS:
        for i, (_kind, completion, _score) in enumerate(t["solutions"]):
            items.append((completion, t["reference"]))
            keys.append((t["id"], i))
    try:
        return dict(zip(keys, verifier.verify_batch(items), strict=True))
    finally:
        sb.close()


@pytest.mark.slow
@pytest.mark.parametrize(("task_id", "index", "kind"), CASES, ids=[f"{t}-{k}" for t, _, k in CASES])
def test_solution_is_scored_as_intended(verdicts, task_id, index, kind):
    task = next(t for t in TASKS if t["id"] == task_id)
    _, _, expected = task["solutions"][index]
    v = verdicts[(task_id, index)]
    outcomes = [c["outcome"] for c in v.details.get("cases", [])]
    if kind == "correct":
        assert v.score == 1.0 and v.passed and v.reason == "ok", v
    elif kind == "wrong":
        assert v.score == pytest.approx(expected) and not v.passed, v
    elif kind == "slow":
        assert "timeout" in outcomes and v.score == pytest.approx(expected), v
    else:  # hack
        assert v.score <= expected + 1e-9 and not v.passed, v
