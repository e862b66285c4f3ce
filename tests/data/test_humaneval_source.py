"""``builtin:humaneval`` and HumanEval-layout files: records, splits, and references whose
tests call the prompt's own helpers (checked through the real code verifier)."""

from __future__ import annotations

import json
import random

import pytest

from rlvr.data import DataError, load_prompts
from rlvr.data.humaneval import problems
from sandbox.local import LocalSandbox
from verifiers.code import CodeVerifier


def test_builtin_humaneval_has_the_164_problems_as_code_records():
    records = load_prompts("builtin:humaneval")
    assert len(records) == 164 and records[0].id == "HumanEval/0"
    assert all(r.verifier == "code" for r in records)
    first = records[0]
    assert "def has_close_elements" in first.prompt and "```python" in first.prompt
    assert first.reference["entry_point"] == "has_close_elements"
    assert "def check(candidate)" in first.reference["test_code"]


def test_splits_are_disjoint_and_n_is_a_ceiling():
    train = {r.id for r in load_prompts("builtin:humaneval?split=train")}
    test = {r.id for r in load_prompts("builtin:humaneval?split=test")}
    assert train and test and not train & test and len(train | test) == 164
    shuffled = [r.id for r in load_prompts("builtin:humaneval?n=5&seed=3")]
    assert len(shuffled) == 5 and shuffled != [f"HumanEval/{i}" for i in range(5)]
    with pytest.raises(DataError, match="unknown parameter"):
        load_prompts("builtin:humaneval?digits=2")


@pytest.fixture(scope="module")
def verifier():
    sb = LocalSandbox(concurrency=4, uid_base=64000 + random.randrange(0, 1000) * 16)
    yield CodeVerifier(sandbox=sb, timeout_s=5.0)
    sb.close()


def test_tests_call_the_prompts_helpers_not_the_programs(verifier):
    by_id = {r.id: r for r in load_prompts("builtin:humaneval")}
    canon = {p.task_id: p for p in problems()}
    items = []
    for task in ("HumanEval/32", "HumanEval/38", "HumanEval/50"):
        p = canon[task]
        assert p.prompt.split("def ")[1].split("(")[0] in by_id[task].reference["test_code"]
        items.append((f"```python\n{p.prompt}{p.canonical_solution}\n```", by_id[task].reference))
    # A program that redefines the helper the tests trust (poly) to make any root pass.
    cheat = "def poly(xs, x):\n    return 0.0\ndef find_zero(xs):\n    return 0.0"
    items.append((f"```python\n{cheat}\n```", by_id["HumanEval/32"].reference))
    scores = [v.score for v in verifier.verify_batch(items)]
    assert scores == [1.0, 1.0, 1.0, 0.0]


def test_humaneval_layout_files_get_the_same_references(tmp_path):
    p = problems()[32]
    path = tmp_path / "he.jsonl"
    row = {"prompt": p.prompt, "test": p.test, "entry_point": p.entry_point, "id": p.task_id}
    path.write_text(json.dumps(row) + "\n")
    (record,) = load_prompts(str(path))
    assert record.verifier == "code" and record.reference["test_code"].startswith("import math")
    assert "def poly" in record.reference["test_code"]
