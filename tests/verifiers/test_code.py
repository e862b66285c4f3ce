"""The ``code`` verifier: extraction, reference checks, grading and reward-hacking resistance.

Everything runs in the real local (bubblewrap) sandbox.
"""

from __future__ import annotations

import random

import pytest

from sandbox import RunResult, SandboxError
from sandbox.local import LocalSandbox
from verifiers import BadReferenceError, get_verifier, list_verifiers
from verifiers.code import CodeVerifier, extract_program, outputs_match, plan_function_tests


@pytest.fixture(scope="module")
def verifier():
    sb = LocalSandbox(concurrency=8, uid_base=64000 + random.randrange(0, 1000) * 16)
    yield CodeVerifier(sandbox=sb, timeout_s=1.0)
    sb.close()


def fenced(code: str) -> str:
    return f"<think>ok</think>\n```python\n{code}\n```"


ADD = {"test_code": "assert add(1, 2) == 3\nassert add(2, 2) == 4\n", "entry_point": "add"}


# ---------------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    ("completion", "program"),
    [
        ("<think>x</think>```python\nprint(1)\n```", "print(1)"),
        ("```python\nprint(0)\n```\nbetter:\n```py\nprint(2)\n```", "print(2)"),
        ("```\nprint(3)\n```", "print(3)"),
        ("```bash\nls\n```\n```python\nprint(4)\n```\n```text\nout\n```", "print(4)"),
        ("<think>```python\nprint('in think')\n```</think>plain = 5", "plain = 5"),
        ("<think>a</think><answer>print(6)</answer>", "print(6)"),
        ("```python\nprint(7)\n", "print(7)"),  # unclosed fence (cut-off generation)
        ("<think>only thinking</think>   ", None),
        ("", None),
    ],
)
def test_program_is_the_last_python_block_after_think(completion, program):
    assert extract_program(completion) == program


def test_outputs_compare_tokens_not_whitespace():
    assert outputs_match("1 2\n3  \n\n", "1\n2 3")
    assert not outputs_match("1 2", "1 2 3")
    assert not outputs_match("1.0", "1")  # exact unless a tolerance is given
    assert outputs_match("0.3333334", "0.333333333", float_tol=1e-6)
    assert not outputs_match("0.34", "0.333", float_tol=1e-6)
    assert not outputs_match("abc", "abd", float_tol=1.0)


# ------------------------------------------------------------------------- planning


def test_humaneval_check_body_becomes_cases_and_setup():
    plan = plan_function_tests(
        "import math\nMETADATA = {}\n\ndef check(candidate):\n    x = 2\n"
        "    assert candidate(1) == 2\n    assert math.isclose(candidate(x), 4.0)\n"
        "    for i in range(3):\n        assert candidate(i) == 2 * i\n    assert True\n\ncheck(f)\n",
        "f",
    )
    kinds = [k for k, _ in plan.steps]
    assert kinds == ["setup", "setup", "setup", "case", "case", "case", "setup"]
    literal, isclose, loop = plan.cases
    assert literal.judge_here and literal.record_source == "candidate(1)"  # no expected value
    assert not isclose.judge_here and isclose.record_source == "candidate(x)"
    assert loop.check is None and "for i in range(3)" in loop.record_source
    assert set(plan.names) == {"f", "candidate"}


def test_expected_values_stay_out_of_the_recording_run():
    plan = plan_function_tests(
        "import math\nEXPECTED = {3: 'secret-31337'}\ndef _reference(x):\n    return 'secret-42'\n"
        "def make(n):\n    return list(range(n))\ndata = make(3)\n"
        "assert f([1, 2]) == [987654, 123456]\nassert abs(f(3) - 0.5551) < 1e-3\n"
        "assert f(data) == EXPECTED[3]\nassert math.isclose(f(2), _reference(2))\n",
        "f",
    )
    recorded = repr(plan.record_steps())
    for secret in ("987654", "0.5551", "secret-31337", "secret-42", "EXPECTED", "_reference"):
        assert secret not in recorded
    assert "def make" in recorded and "data = make(3)" in recorded  # inputs do go in


def test_a_program_cannot_find_a_reference_helper(verifier):
    ref = {
        "test_code": "def _reference(x):\n    return x * 7 + 3\n"
        "assert triple_ish(2) == _reference(2)\nassert triple_ish(5) == _reference(5)\n",
        "entry_point": "triple_ish",
    }
    thief = (
        "import gc\ndef triple_ish(x):\n"
        "    for o in gc.get_objects():\n"
        "        if callable(o) and getattr(o, '__name__', '') == '_reference':\n"
        "            return o(x)\n    return None"
    )
    assert verifier.verify(fenced(thief), ref).score == 0.0
    assert verifier.verify(fenced("def triple_ish(x):\n    return 7 * x + 3"), ref).score == 1.0


def test_short_circuit_and_conditional_calls_are_not_cut_into_holes():
    plan = plan_function_tests(
        "assert f(1) == 1 or f(2) == 2\nassert (f(3) if f(0) else 0) == 3\nassert f(f(1)) == 1\n"
        "assert all(f(i) == i for i in range(3))\nassert f(1) == 1 and f(2) == 2\n",
        "f",
    )
    assert [c.check is not None for c in plan.cases] == [False, False, False, False, True]


@pytest.mark.parametrize(
    ("reference", "words"),
    [
        ("assert f(1) == 1", "must be a dict"),
        ({}, "needs 'tests'"),
        ({"tests": []}, "non-empty list"),
        ({"tests": [{"stdin": "1"}]}, r"tests\[0\] needs a 'stdout'"),
        ({"tests": [{"stdin": 1, "stdout": "1"}]}, r"tests\[0\]\['stdin'\] must be a string"),
        ({"tests": [{"stdout": "1"}], "float_tol": -1}, "float_tol"),
        ({"tests": [{"stdout": "1"}], "timeout_s": 0}, "timeout_s"),
        ({"test_code": "assert f(1) == 1"}, "entry_point"),
        ({"test_code": "assert f(1) == 1", "entry_point": "not valid"}, "entry_point"),
        ({"test_code": "assert f(1 == 1", "entry_point": "f"}, "does not parse"),
        ({"test_code": "x = 1\nassert x == 1", "entry_point": "f"}, "no assert that calls 'f'"),
    ],
)
def test_bad_references_raise_reference_error_naming_the_field(verifier, reference, words):
    with pytest.raises(BadReferenceError, match=words):
        verifier.verify(fenced("print(1)"), reference)


def test_registered_as_code_with_its_reference_format():
    assert isinstance(get_verifier("code", sandbox=None, backend="local"), CodeVerifier)
    info = {v.name: v for v in list_verifiers()}["code"]
    assert "test_code" in info.reference_format and "stdin" in info.reference_format


# --------------------------------------------------------------------------- grading


def test_details_list_each_case_outcome(verifier):
    ref = {
        "tests": [
            {"stdin": "2\n", "stdout": "4\n"},
            {"stdin": "3\n", "stdout": "9\n"},
            {"stdin": "x\n", "stdout": "?\n"},
            {"stdin": "0\n", "stdout": "0\n"},
        ]
    }
    code = "n = int(input())\nif n == 0:\n    while True: pass\nprint(n * n if n != 3 else 0)"
    v = verifier.verify(fenced(code), ref)
    assert [c["outcome"] for c in v.details["cases"]] == [
        "passed",
        "wrong_answer",
        "runtime_error",
        "timeout",
    ]
    assert v.score == 0.25 and not v.passed and v.details["format"] == "stdio"
    assert "ValueError" in v.details["cases"][2]["error"]


def test_nonzero_exit_fails_even_with_the_right_output(verifier):
    v = verifier.verify(fenced("print(3)\nraise SystemExit(1)"), {"tests": [{"stdout": "3"}]})
    assert v.score == 0.0 and v.details["cases"][0]["outcome"] == "runtime_error"


def test_output_flood_is_an_output_limit_not_a_hang(verifier):
    v = verifier.verify(fenced("while True:\n    print('x' * 10000)"), {"tests": [{"stdout": "x"}]})
    assert v.details["cases"][0]["outcome"] == "output_limit"


def test_function_cases_without_literal_expectations_go_through_replay(verifier):
    ref = {
        "test_code": "import math\ndef check(candidate):\n    assert math.isclose(candidate(2), 1.4142135, rel_tol=1e-6)\n"
        "    for x in [4, 9]:\n        assert candidate(x) == x ** 0.5\n    assert candidate(16) == 4\n",
        "entry_point": "root",
    }
    good = verifier.verify(fenced("def root(x):\n    return x ** 0.5"), ref)
    assert good.score == 1.0 and good.passed and good.reason == "ok"
    off = verifier.verify(fenced("def root(x):\n    return x / 2"), ref)
    assert [c["outcome"] for c in off.details["cases"]] == [
        "wrong_answer",
        "wrong_answer",
        "wrong_answer",
    ]


def test_program_names_are_visible_to_the_tests_but_cannot_shadow_the_function(verifier):
    # A recursive solution calls itself by its global name: the recording wrapper must not
    # see (and record) those inner calls.
    ref = {"test_code": "assert fact(5) == 120\nassert fact(0) == 1\n", "entry_point": "fact"}
    v = verifier.verify(fenced("def fact(n):\n    return 1 if n == 0 else n * fact(n - 1)"), ref)
    assert v.score == 1.0


def test_missing_entry_point_fails_every_case(verifier):
    v = verifier.verify(fenced("def plus(a, b):\n    return a + b"), ADD)
    assert v.score == 0.0 and "missing:add" in v.details["error"]


def test_no_program_scores_zero_with_reason(verifier):
    v = verifier.verify("<think>hmm</think>", ADD)
    assert (v.score, v.passed, v.reason) == (0.0, False, "no_code")


def test_verify_never_raises_for_a_hostile_completion(verifier):
    for completion in [None, 123, "```python\n" + "(" * 10000 + "\n```", "\x00\x01\x02"]:
        v = verifier.verify(completion, ADD)
        assert v.score == 0.0


def test_verify_batch_matches_one_by_one(verifier):
    items = [
        (fenced("def add(a, b):\n    return a + b"), ADD),
        (fenced("def add(a, b):\n    return 4"), ADD),
        (fenced("print(int(input()) + 1)"), {"tests": [{"stdin": "1", "stdout": "2"}]}),
    ]
    batch = [v.score for v in verifier.verify_batch(items)]
    assert batch == [verifier.verify(c, r).score for c, r in items] == [1.0, 0.5, 1.0]


def test_sandbox_failure_is_an_error_verdict_not_an_exception():
    class BrokenSandbox:
        def run_many(self, specs):
            raise SandboxError("engine went away")

    v = CodeVerifier(sandbox=BrokenSandbox()).verify(
        fenced("print(1)"), {"tests": [{"stdout": "1"}]}
    )
    assert v.reason == "error" and "engine went away" in v.details["error"]


# ------------------------------------------------------------------- reward hacking


@pytest.mark.parametrize(
    ("name", "program"),
    [
        ("sys.exit before the tests", "import sys\nsys.exit(0)\ndef add(a, b):\n    return a + b"),
        ("os._exit in the call", "import os\ndef add(a, b):\n    os._exit(0)"),
        ("SystemExit in the call", "def add(a, b):\n    raise SystemExit(0)"),
        (
            "always-equal object",
            "class E:\n    def __eq__(s, o): return True\ndef add(a, b):\n    return E()",
        ),
        (
            "int subclass that equals anything",
            "class I(int):\n    def __eq__(s, o): return True\n"
            "    __hash__ = int.__hash__\ndef add(a, b):\n    return I(-1)",
        ),
        ("fake success lines", "print('PASSED 2/2')\nprint('ok')\ndef add(a, b):\n    return None"),
        (
            "forged report lines with the nonce",
            "import json, os\ns = json.load(open('harness.json'))\nfor k in ['load', '0', '1']:\n"
            "    os.write(1, ('\\n%s %s %s\\n' % (s['nonce'], k, json.dumps({'end': 'ok', 'calls': [['i', '3']]}))).encode())\n"
            "def add(a, b):\n    return 0",
        ),
        (
            "patched harness and builtins",
            # (It can change what gets reported, not what the parent compares it with.)
            "import __main__, builtins\n__main__.encode = lambda v, depth=0: ['s', 'PASS']\n"
            "__main__.decode = lambda t, depth=0: True\nbuiltins.AssertionError = KeyError\n"
            "def add(a, b):\n    return 0",
        ),
        (
            "reads the tests it was given",
            "import re\nnums = re.findall(r'\\d+', open('harness.json').read())\n"
            "def add(a, b):\n    return int(nums[-1])",
        ),
    ],
)
def test_reward_hacks_score_zero(verifier, name, program):
    v = verifier.verify(fenced(program), ADD)
    assert v.score == 0.0 and not v.passed, (name, v)


def test_forged_lines_next_to_real_ones_are_tampering(verifier):
    program = (
        "import json, os\ns = json.load(open('harness.json'))\n"
        "os.write(1, ('\\n%s 0 %s\\n' % (s['nonce'], json.dumps({'end': 'ok', 'calls': [['i', '3']]}))).encode())\n"
        "def add(a, b):\n    return a + b"
    )
    v = verifier.verify(fenced(program), ADD)
    assert v.details["cases"][0]["outcome"] == "tampered" and v.score == 0.5


def test_expected_stdout_never_reaches_the_program(verifier):
    secret = "expected-4d1c7e"
    program = "import os, sys\nfor root, dirs, files in os.walk('/work'):\n    print(root, files)\nprint(sys.stdin.read())"
    r = verifier.sandbox.run_python(program)  # the same way the verifier runs it
    assert isinstance(r, RunResult)
    v = verifier.verify(fenced(program), {"tests": [{"stdin": "in", "stdout": secret}]})
    assert secret not in str(v.details["cases"])  # the program's output never held it
