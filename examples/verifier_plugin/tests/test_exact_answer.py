"""How to test a verifier: call it directly on (completion, reference) pairs, check the
Verdict, and check that a bad reference raises BadReferenceError.

    pip install -e examples/verifier_plugin && pytest examples/verifier_plugin/tests
"""

import pytest
from rlvr_verifier_example import ExactAnswerVerifier

from verifiers import BadReferenceError, get_verifier


@pytest.mark.parametrize(
    ("completion", "reference", "passed", "reason"),
    [
        ("<think>capital of France</think><answer>Paris</answer>", "Paris", True, "ok"),
        ("<think>…</think><answer>  paris </answer>", "Paris", True, "ok"),
        ("<think>…</think><answer>Lyon</answer>", "Paris", False, "mismatch"),
        ("<think><answer>Paris</answer></think>", "Paris", False, "no_answer"),
        ("", "Paris", False, "no_answer"),
    ],
)
def test_answer_text_must_match_the_reference(completion, reference, passed, reason):
    verdict = ExactAnswerVerifier().verify(completion, reference)
    assert (verdict.passed, verdict.reason) == (passed, reason)


def test_case_sensitive_option_compares_case():
    verdict = ExactAnswerVerifier(case_sensitive=True).verify("<answer>paris</answer>", "Paris")
    assert not verdict.passed


def test_empty_reference_is_a_reference_error():
    with pytest.raises(BadReferenceError, match="non-empty string"):
        ExactAnswerVerifier().verify("<answer>x</answer>", "")


def test_installed_plugin_is_found_by_name():
    assert isinstance(get_verifier("exact_answer"), ExactAnswerVerifier)
