"""countdown: the answer's arithmetic uses the given numbers at most once each and hits the
target; parsed with ast and evaluated exactly, never eval-ed."""

from __future__ import annotations

import pytest

from verifiers import BadReferenceError, get_verifier

REF = {"numbers": [3, 4, 5, 6], "target": 35}


@pytest.mark.parametrize(
    ("completion", "passed", "reason"),
    [
        ("<think>3+4=7, 7*5=35</think>\n<answer>(3 + 4) * 5</answer>", True, "ok"),
        ("<think>r</think><answer>(3 + 4) × 5 = 35</answer>", True, "ok"),
        ("<think>r</think> so $\\boxed{(4+3)\\times 5}$", True, "ok"),
        ("<think>r</think>\nfirst try 3*4\n(3+4)*5", True, "ok"),  # last line with a digit
        ("<answer>6 * 6 - 1</answer>", False, "mismatch"),  # 6 twice, 1 not given
        ("<answer>5 * 7</answer>", False, "mismatch"),  # 7 not given
        ("<answer>3 * 4 * 5</answer>", False, "mismatch"),  # wrong value
        ("<answer>(6 - 6/6) * 7</answer>", False, "mismatch"),
        ("<answer>5 * (6 + 4 / 4 * 1)</answer>", False, "mismatch"),
        ("<answer>5 ** 2 + 10</answer>", False, "parse_error"),  # no powers
        ("<answer>-3 + 38</answer>", False, "parse_error"),  # no unary minus
        ("<answer>35 / (4 - 4)</answer>", False, "parse_error"),
        ("<answer>(3 + 4) * 5.0</answer>", False, "parse_error"),
        ("<answer>(3 + 4 * 5</answer>", False, "parse_error"),
        ("<answer>" + "(" * 400 + "5" + ")" * 400 + "</answer>", False, "parse_error"),
        ("<think>(3+4)*5</think>", False, "no_answer"),  # only in the reasoning
        ("<think>(3+4)*5", False, "no_answer"),
        ("no numbers here", False, "no_answer"),
        ("", False, "no_answer"),
    ],
)
def test_countdown_verdicts(completion, passed, reason):
    verdict = get_verifier("countdown").verify(completion, REF)
    assert (verdict.passed, verdict.reason) == (passed, reason)


def test_division_is_exact_not_floating_point():
    ref = {"numbers": [1, 3, 3, 9], "target": 3}
    assert get_verifier("countdown").verify("<answer>(1/3) * 9</answer>", ref).passed
    assert (
        get_verifier("countdown")
        .verify(
            "<answer>(1/3 + 1/3 + 1/3) * 3</answer>",
            {"numbers": [1, 1, 1, 3, 3, 3, 3], "target": 3},
        )
        .passed
    )


def test_code_in_the_answer_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    completion = f"<answer>__import__('os').system('touch {marker}')</answer>"
    verdict = get_verifier("countdown").verify(completion, REF)
    assert verdict.reason == "parse_error" and "Call" in verdict.details["why"]
    assert not marker.exists()


def test_use_all_and_format_score_options():
    partial = "<answer>(3 + 4) * 5</answer>"  # 6 unused
    assert get_verifier("countdown").verify(partial, REF).passed
    strict = get_verifier("countdown", use_all=True, format_score=0.1).verify(partial, REF)
    assert (strict.passed, strict.score, strict.reason) == (False, 0.1, "mismatch")
    wrong = get_verifier("countdown", format_score=0.1).verify("<answer>3+4+5+6</answer>", REF)
    assert (wrong.score, wrong.details["value"]) == (0.1, "18")
    with pytest.raises(ValueError, match="format_score"):
        get_verifier("countdown", format_score=2)


@pytest.mark.parametrize(
    ("reference", "match"),
    [
        ([3, 4], "got list"),
        ({"numbers": [], "target": 3}, '"numbers" must be a non-empty list'),
        ({"numbers": [3, "4"], "target": 7}, '"numbers"'),
        ({"numbers": [3, 4]}, '"target" must be an integer'),
        ({"numbers": [3, 4], "target": 7.5}, '"target"'),
    ],
)
def test_malformed_reference_names_the_field(reference, match):
    with pytest.raises(BadReferenceError, match=match):
        get_verifier("countdown").verify("<answer>3+4</answer>", reference)
