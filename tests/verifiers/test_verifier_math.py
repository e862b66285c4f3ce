"""The math verifier: answer extraction, reasons, gold caching, options, and that its
timeout holds (and scores are real, not silently 0) off the main thread and in Ray actors."""

from __future__ import annotations

import threading
import time

import pytest

from verifiers import BadReferenceError, Verdict, get_verifier
from verifiers.math import (
    MathVerifier,
    _parsed_gold,
    _read_bare,
    _read_bare_kept,
    extract_answer,
    last_boxed,
)

HUGE = "<think>x</think><answer>$9^{9^{9^{9}}}$</answer>"


@pytest.mark.parametrize(
    ("completion", "span", "source"),
    [
        ("<think>r</think>\n<answer>57</answer>", "57", "answer_tag"),
        ("<think>\\boxed{1}</think>\\boxed{2} <answer>3</answer>", "3", "answer_tag"),
        ("<think>r</think><answer>so \\boxed{\\frac{1}{2}}</answer>", "\\frac{1}{2}", "answer_tag"),
        ("<think>r</think> first \\boxed{3}, no wait: \\boxed{5}.", "5", "boxed"),
        ("<think>r</think> $\\boxed{2}, \\boxed{3}$ and $\\boxed{5}$", "2, 3, 5", "boxed"),
        ("<think>r</think> \\boxed{\\{1, 2\\}}", "\\{1, 2\\}", "boxed"),
        ("<think>r</think> \\boxed{\\boxed{7}}", "7", "boxed"),
        ("<think>r</think><answer>4", "4", "text"),  # tag cut off by the token budget
        ("no reasoning, the answer is 9", "no reasoning, the answer is 9", "text"),
    ],
)
def test_extract_answer_prefers_tag_then_last_boxed_then_text(completion, span, source):
    answer = extract_answer(completion)
    assert (answer.span, answer.source) == (span, source)


@pytest.mark.parametrize(
    "completion",
    [
        "",
        "  \n ",
        "<think>the answer is \\boxed{5}</think>",
        "<think>still thinking 5",
        "<think>a</think>\n",
    ],
)
def test_no_answer_after_the_reasoning_means_no_answer(completion):
    assert extract_answer(completion).span is None


def test_last_boxed_reads_balanced_braces_and_set_braces():
    assert last_boxed("\\boxed{\\frac{a}{b}} tail") == "\\frac{a}{b}"
    assert last_boxed("\\boxed{\\{1, 2\\}}") == "\\{1, 2\\}"
    assert last_boxed("\\boxed{unclosed") is None
    assert last_boxed("nothing here") is None


@pytest.mark.parametrize(
    ("completion", "gold", "reason"),
    [
        ("<think>r</think><answer>4</answer>", "4", "ok"),
        ("<think>r</think><answer>5</answer>", "4", "mismatch"),
        ("<think>r</think><answer>}}{{\\frac{</answer>", "4", "parse_error"),
        ("<think>the answer is 4</think>", "4", "no_answer"),
        ("<think>r</think> I do not know.", "4", "no_answer"),
        ("<think>r</think><answer>(C)</answer>", "C", "ok"),
        ("<think>r</think><answer>(B)</answer>", "C", "mismatch"),
        ("<think>r</think><answer>x = 2</answer>", "2", "ok"),
    ],
)
def test_verdict_reasons(completion, gold, reason):
    verdict = get_verifier("math").verify(completion, gold)
    assert verdict.reason == reason
    assert verdict.passed == (reason == "ok") and verdict.score == float(reason == "ok")


def test_details_say_where_the_answer_came_from():
    verdict = get_verifier("math").verify("<think>r</think> so $\\boxed{\\dfrac{3}{4}}$", "0.75")
    assert verdict.passed
    assert verdict.details["source"] == "boxed"
    assert verdict.details["gold"] == "0.75"
    assert "3" in verdict.details["extracted"]


def test_batch_api_keeps_order():
    items = [(f"<answer>{i}</answer>", str(i if i % 3 else i + 1)) for i in range(12)]
    verdicts = MathVerifier().verify_batch(items)
    assert [v.passed for v in verdicts] == [bool(i % 3) for i in range(12)]


def test_gold_answer_is_parsed_once_for_a_group_of_completions():
    # In-process (this is what a pool worker runs): G completions share one parse.
    _parsed_gold.cache_clear()
    verifier = MathVerifier()
    group = [
        f"<think>try {i}</think><answer>{'3/4' if i % 2 else '0.7'}</answer>" for i in range(8)
    ]
    verdicts = [verifier._verify_here(c, "\\frac{3}{4}") for c in group]
    assert [v.passed for v in verdicts] == [bool(i % 2) for i in range(8)]
    info = _parsed_gold.cache_info()
    assert (info.misses, info.hits) == (1, 7)


def test_a_repeated_answer_is_read_once_and_scored_as_the_first_time():
    # A group's completions repeat a few answers: each is parsed once per worker.
    _read_bare_kept.cache_clear()
    _parsed_gold.cache_clear()
    verifier = MathVerifier()
    completions = [
        f"<think>{i}</think><answer>{'148' if i % 2 else '3/4'}</answer>" for i in range(8)
    ]
    first = [verifier._verify_here(c, "148") for c in completions]
    again = [verifier._verify_here(c, "148") for c in completions]
    assert again == first and [v.passed for v in first] == [bool(i % 2) for i in range(8)]
    assert first[1].details["extracted"] == "148" and first[0].reason == "mismatch"
    # "148" (the gold too), "3/4": three reads for 16 verifications
    assert _read_bare_kept.cache_info().misses == 2


def test_a_kept_reading_is_a_copy_its_caller_may_extend():
    readings = _read_bare("3/4", ("latex", "expr"))
    readings.append("something else")
    assert _read_bare("3/4", ("latex", "expr")) == readings[:-1]


def test_long_answers_are_not_kept():
    _read_bare_kept.cache_clear()
    _parsed_gold.cache_clear()
    long_answer = "1 + " * 100 + "1"  # over the kept length: read every time
    MathVerifier()._verify_here(f"<answer>{long_answer}</answer>", "101")
    assert _read_bare_kept.cache_info().currsize == 1  # the gold only


@pytest.mark.parametrize(
    ("reference", "match"),
    [
        (None, "got NoneType"),
        ({"gold": 1}, "got dict"),
        ("", "empty"),
        (True, "got bool"),
        ("$$", "no answer that math-verify can parse"),  # found while parsing, in the worker
    ],
)
def test_malformed_reference_is_a_reference_error_naming_the_fix(reference, match):
    with pytest.raises(BadReferenceError, match=match):
        get_verifier("math").verify("<answer>1</answer>", reference)


def test_numbers_are_accepted_as_references():
    assert get_verifier("math").verify("<answer>0.25</answer>", 0.25).passed
    assert get_verifier("math").verify("<answer>12</answer>", 12).passed


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"timeout_s": 0}, "timeout_s"),
        ({"float_rounding": "6"}, "float_rounding"),
        ({"strict": "yes"}, "strict"),
        ({"extract": ["regex"]}, "extract"),
    ],
)
def test_bad_options_name_the_field(options, field):
    with pytest.raises(ValueError, match=field):
        MathVerifier(**options)


def test_options_change_the_comparison():
    assert not get_verifier("math").verify("<answer>$f(y)$</answer>", "$f(x)$").passed
    assert get_verifier("math", strict=False).verify("<answer>$f(y)$</answer>", "$f(x)$").passed
    assert get_verifier("math", float_rounding=2).verify("<answer>0.333</answer>", "1/3").passed
    assert not get_verifier("math", float_rounding=4).verify("<answer>0.333</answer>", "1/3").passed


def test_verify_from_a_thread_scores_for_real_and_enforces_the_timeout():
    import math_verify

    out: dict[str, object] = {}

    def worker() -> None:
        # The bug other frameworks shipped: math-verify's signal.alarm off the main thread.
        try:
            math_verify.verify(math_verify.parse("$4$"), math_verify.parse("$4$"))
            out["bare"] = "no error"
        except ValueError as exc:
            out["bare"] = str(exc)
        v = MathVerifier(timeout_s=1.0)
        out["right"] = v.verify("<think>r</think><answer>4</answer>", "4")
        t0 = time.monotonic()
        out["hung"] = v.verify(HUGE, "5")
        out["hung_s"] = time.monotonic() - t0

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(timeout=120)
    assert "threaded environment" in str(out["bare"])  # what we work around
    assert out["right"] == Verdict(1.0, True, "ok", out["right"].details)
    assert out["hung"] == Verdict(0.0, False, "timeout")
    assert out["hung_s"] < 1.0 + 0.5


@pytest.mark.slow
def test_verify_inside_a_ray_actor_scores_for_real_and_enforces_the_timeout(ray_cluster):
    ray = ray_cluster

    @ray.remote(num_cpus=0, max_concurrency=2)  # threaded actor: calls run off the main thread
    class Scorer:
        def score(self, completion: str, gold: str) -> dict:
            import threading
            import time

            from verifiers import get_verifier

            t0 = time.monotonic()
            verdict = get_verifier("math", timeout_s=1.0).verify(completion, gold)
            return {
                **verdict.to_dict(),
                "seconds": time.monotonic() - t0,
                "main_thread": threading.current_thread() is threading.main_thread(),
            }

    scorer = Scorer.remote()
    # The actor's first call starts its pool workers; the timeout counts from a ready worker.
    assert ray.get(scorer.score.remote("<answer>1</answer>", "1"), timeout=180)["passed"]
    right, wrong, hung = ray.get(
        [
            scorer.score.remote("<think>r</think><answer>\\frac{6}{8}</answer>", "3/4"),
            scorer.score.remote("<think>r</think><answer>0.7</answer>", "3/4"),
            scorer.score.remote(HUGE, "5"),
        ],
        timeout=180,
    )
    assert not right["main_thread"]
    assert (right["passed"], right["reason"], right["score"]) == (True, "ok", 1.0)
    assert (wrong["passed"], wrong["reason"]) == (False, "mismatch")
    assert (hung["passed"], hung["reason"]) == (False, "timeout")
    assert hung["seconds"] < 1.0 + 0.5
    ray.kill(scorer)


@pytest.mark.parametrize(
    "completion",
    [
        "<answer>15 + 29</answer>",
        "To calculate 15 + 29, we need",  # a truncated restatement of the question
        "so the answer is \\boxed{\\frac{88}{2}}",
    ],
)
def test_require_number_refuses_an_expression_equal_to_an_integer_gold(completion):
    assert MathVerifier().verify(completion, "44").passed  # sympy finds them equal
    verdict = MathVerifier(require_number=True).verify(completion, "44")
    assert (verdict.passed, verdict.reason) == (False, "unevaluated")


def test_require_number_still_accepts_numbers_and_non_integer_golds():
    strict = MathVerifier(require_number=True)
    assert strict.verify("<answer>44</answer>", "44").passed
    assert strict.verify("<answer>-3</answer>", "-3").passed
    assert strict.verify("<answer>1/2</answer>", "0.5").passed  # only integer golds
