"""think_format: one non-empty think block, then one answer, then nothing; 0.25 per check."""

from __future__ import annotations

import pytest

from verifiers import get_verifier


@pytest.mark.parametrize(
    ("completion", "score", "reason", "failed"),
    [
        ("<think>add 2 and 2</think>\n<answer>4</answer>", 1.0, "ok", []),
        ("  \n<think>r</think> text between is fine <answer>4</answer>\n", 1.0, "ok", []),
        ("<think>   </think><answer>4</answer>", 0.75, "parse_error", ["think_nonempty"]),
        ("<think>r</think><answer>4</answer> and more", 0.75, "parse_error", ["nothing_after"]),
        ("<answer>4</answer>", 0.5, "parse_error", ["think", "think_nonempty"]),
        (
            "<think>a</think><think>b</think><answer>4</answer>",
            0.5,
            "parse_error",
            ["think", "think_nonempty"],
        ),
        (
            "preamble <think>r</think><answer>4</answer>",
            0.5,
            "parse_error",
            ["think", "think_nonempty"],
        ),
        ("<think>r <answer>4</answer></think>", 0.5, "no_answer", ["answer", "nothing_after"]),
        ("<think>r</think><answer> </answer>", 0.5, "no_answer", ["answer", "nothing_after"]),
        (
            "<think>r</think><answer>3</answer><answer>4</answer>",
            0.5,
            "no_answer",
            ["answer", "nothing_after"],
        ),
        (
            "<think>never closed <answer>4</answer>",
            0.0,
            "no_answer",
            ["think", "think_nonempty", "answer", "nothing_after"],
        ),
        ("just text", 0.0, "no_answer", ["think", "think_nonempty", "answer", "nothing_after"]),
        ("", 0.0, "no_answer", ["think", "think_nonempty", "answer", "nothing_after"]),
    ],
)
def test_partial_credit_per_check(completion, score, reason, failed):
    verdict = get_verifier("think_format").verify(completion, None)
    assert (verdict.score, verdict.reason, verdict.details["failed"]) == (score, reason, failed)
    assert verdict.passed == (score == 1.0)


def test_answer_any_accepts_text_after_the_think_block():
    verifier = get_verifier("think_format", answer="any")
    assert verifier.verify("<think>r</think> so \\boxed{4}", None).passed
    assert verifier.verify("<think>r</think>   ", None).reason == "no_answer"


def test_reference_is_ignored_and_bad_option_names_the_field():
    verifier = get_verifier("think_format")
    assert verifier.verify("<think>r</think><answer>4</answer>", {"anything": 1}).passed
    with pytest.raises(ValueError, match="answer must be"):
        get_verifier("think_format", answer="boxed")
