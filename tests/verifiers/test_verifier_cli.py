"""`rlvr verify`: the verdict as JSON; bad input exits 2 with a message naming the problem."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlvr.cli import main

ROOT = Path(__file__).parents[2]


def _run(capsys, *argv: str) -> tuple[int, dict | None, str]:
    code = main(["verify", *argv])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 and out.strip().startswith("{") else None), err


def test_math_verdict_is_printed_as_json(capsys):
    code, verdict, _ = _run(
        capsys,
        "--verifier",
        "math",
        "--completion",
        "<think>r</think><answer>\\frac{3}{4}</answer>",
        "--reference",
        "0.75",
    )
    assert code == 0
    assert verdict == {"score": 1.0, "passed": True, "reason": "ok", "details": verdict["details"]}
    assert verdict["details"]["source"] == "answer_tag"


def test_a_failed_verdict_still_exits_0_and_says_why(capsys):
    code, verdict, _ = _run(
        capsys, "-v", "math", "-c", "<think>r</think><answer>5</answer>", "-r", "4"
    )
    assert (code, verdict["passed"], verdict["reason"]) == (0, False, "mismatch")


def test_json_reference_and_completion_from_stdin(capsys, monkeypatch):
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("<think>r</think><answer>(3+4)*5</answer>"))
    code, verdict, _ = _run(
        capsys,
        "-v",
        "countdown",
        "--completion-file",
        "-",
        "-r",
        '{"numbers": [3, 4, 5], "target": 35}',
    )
    assert (code, verdict["passed"]) == (0, True)


def test_math_reference_that_looks_like_json_stays_an_interval(capsys):
    code, verdict, _ = _run(capsys, "-v", "math", "-c", "<answer>[1,3]</answer>", "-r", "[1, 3]")
    assert (code, verdict["passed"]) == (0, True)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-v", "nope", "-c", "x", "-r", "1"], "unknown verifier 'nope'; known verifiers:"),
        (
            ["-v", "math", "-c", "x", "-r", "  "],
            "--reference for verifier 'math': math reference is empty",
        ),
        (
            ["-v", "math", "-c", "x", "-r", "$$"],
            "has no answer that math-verify can parse",
        ),  # found in the worker
        (["-v", "countdown", "-c", "x", "-r", "[1, 2]"], "--reference for verifier 'countdown'"),
        (
            ["-v", "countdown", "-c", "x", "-r", "35"],
            'must be {"numbers": [integers], "target": integer}, got int',
        ),
        (["-v", "math", "-c", "x", "-r", "1", "--options", "{bad"], "--options is not valid JSON"),
        (
            ["-v", "math", "-c", "x", "-r", "1", "--options", '{"strict": "no"}'],
            "strict: Input should be a valid boolean",
        ),
        (["-c", "x", "-r", "1"], "--verifier is required"),
        (["-v", "math", "-r", "1"], "exactly one of --completion"),
        (["-v", "math", "-c", "x"], "--reference is required"),
        (["-v", "math", "--completion-file", "/nonexistent/file", "-r", "1"], "cannot read"),
    ],
)
def test_bad_input_exits_2_naming_the_problem(capsys, argv, message):
    code, _, err = _run(capsys, *argv)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_list_shows_every_builtin_with_its_reference_format(capsys):
    assert main(["verify", "--list", "--json"]) == 0
    infos = {i["name"]: i for i in json.loads(capsys.readouterr().out)}
    assert {"math", "think_format", "countdown"} <= set(infos)
    assert "numbers" in infos["countdown"]["reference_format"]
    assert all(infos[n]["description"] for n in ("math", "think_format", "countdown"))
    assert main(["verify", "--list"]) == 0
    assert "reference:" in capsys.readouterr().out


def test_installed_rlvr_command_prints_the_verdict():
    rlvr = Path(sys.executable).parent / "rlvr"
    command = [str(rlvr)] if rlvr.exists() else [sys.executable, "-m", "rlvr"]
    proc = subprocess.run(
        [
            *command,
            "verify",
            "--verifier",
            "math",
            "--completion",
            "the answer is $\\boxed{42}$",
            "--reference",
            "42",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["passed"] is True
