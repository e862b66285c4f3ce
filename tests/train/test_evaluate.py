"""Eval metrics (rlvr/train/evaluate.py): pass@k and maj@k against brute-force enumeration
over every k-subset of the samples, eval-set naming, the metric set of a job's evaluation."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from fractions import Fraction

import pytest

from rlvr.config import JobSpec
from rlvr.rollout.base import Completion
from rlvr.train.evaluate import (
    answer_key,
    eval_sets,
    evaluate_sets,
    maj_at_k,
    pass_at_k,
    prompt_pass_rates,
    set_name,
)
from rlvr.train.reward import Reward
from verifiers import Verdict


def brute_pass_at_k(passed: list[bool], k: int) -> float:
    subsets = list(itertools.combinations(passed, k))
    return sum(any(s) for s in subsets) / len(subsets)


def brute_maj_at_k(answers: list, correct: list[bool], k: int) -> float:
    quality = {
        a: Fraction(
            sum(ok for b, ok in zip(answers, correct, strict=True) if b == a), answers.count(a)
        )
        for a in set(answers) - {None}
    }
    total, subsets = Fraction(0), list(itertools.combinations(range(len(answers)), k))
    for subset in subsets:
        votes = Counter(answers[i] for i in subset if answers[i] is not None)
        if not votes:
            continue
        top = max(votes.values())
        winners = [a for a, v in votes.items() if v == top]
        total += sum(quality[a] for a in winners) / len(winners)
    return float(total / len(subsets))


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_pass_at_k_matches_enumeration(n):
    for c in range(n + 1):
        passed = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(passed, k), abs=1e-12)


def test_pass_at_k_refuses_impossible_counts():
    for n, c, k in [(4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5)]:
        with pytest.raises(ValueError, match="1 <= k <= n"):
            pass_at_k(n, c, k)


def test_maj_at_k_matches_enumeration_on_random_cases():
    rng = random.Random(0)
    for _ in range(150):
        n = rng.randint(1, 9)
        pool = ["a", "b", "c", "d", None][: rng.randint(1, 5)]
        answers = [rng.choice(pool) for _ in range(n)]
        correct = [a == "a" or (a is not None and rng.random() < 0.1) for a in answers]
        for k in range(1, n + 1):
            assert maj_at_k(answers, correct, k) == pytest.approx(
                brute_maj_at_k(answers, correct, k), abs=1e-12
            ), (answers, correct, k)


def test_maj_at_k_hand_cases():
    # two right, one wrong: the vote over all three is right
    assert maj_at_k(["4", "4", "5"], [True, True, False], 3) == 1.0
    # a 1-1 tie between right and wrong: half credit
    assert maj_at_k(["4", "5"], [True, False], 2) == 0.5
    # no answers at all: nothing wins
    assert maj_at_k([None, None], [False, False], 2) == 0.0
    # the majority answer is wrong even though pass@k would be 1
    assert maj_at_k(["5", "5", "4"], [False, False, True], 3) == 0.0


def test_answer_key_reads_the_normalised_answer():
    assert answer_key(Verdict(1.0, True, "ok", {"extracted": " 3 / 4 "})) == "3 / 4"
    assert answer_key(Verdict(0.0, False, "mismatch", {"expression": "3+4"})) == "3+4"
    assert answer_key(Verdict(1.0, True, "ok", {"cases": []})) is None
    assert answer_key(None) is None


def test_set_names_come_from_sources_and_eval_sets_replace_data_eval():
    assert set_name("builtin:arithmetic?n=200&seed=1") == "arithmetic"
    assert set_name("data/gsm8k test.jsonl") == "gsm8k_test"
    assert eval_sets(JobSpec()) == {"arithmetic": "builtin:arithmetic?n=200&seed=1"}
    spec = JobSpec.model_validate({"eval": {"sets": {"he": "builtin:humaneval", "a": "x.jsonl"}}})
    assert list(eval_sets(spec)) == ["he", "a"]
    assert eval_sets(JobSpec.model_validate({"data": {"eval": None}})) == {}


@pytest.mark.parametrize(
    ("eval_spec", "words"),
    [
        ({"sets": {"a/b": "builtin:humaneval"}}, "eval set name"),
        ({"sets": {"a": " "}}, "needs a data source"),
        ({"k": [0]}, "every k must be in 1..64"),
        ({"samples": 65}, "less than or equal to 64"),
        ({"temperature": 0}, "greater than 0"),
        ({"sets": {f"s{i}": "builtin:humaneval" for i in range(9)}}, "at most 8"),
    ],
)
def test_bad_eval_specs_name_the_field(eval_spec, words):
    with pytest.raises(ValueError, match=words):
        JobSpec.model_validate({"eval": eval_spec})


def test_eval_sets_and_data_eval_together_are_refused():
    with pytest.raises(ValueError, match="not both"):
        JobSpec.model_validate({"data": {"eval": "x.jsonl"}, "eval": {"sets": {"a": "y.jsonl"}}})


class _Prompts:
    def __init__(self, answers: list[str]):
        self.records = [type("R", (), {"reference": a})() for a in answers]
        self.token_ids = [[1, 2] for _ in answers]


def test_evaluate_sets_reports_every_set_and_keeps_eval_accuracy_greedy():
    """A scripted policy: greedy answers right on prompt 0 only; sampled, sample j says
    str(j % 3) for every prompt. References: prompt 0 -> '0', prompt 1 -> '1'."""
    calls = []

    def generate(token_ids, config):
        calls.append((config.n, config.temperature))
        out = []
        for p in range(len(token_ids)):
            texts = ["0"] if config.temperature == 0 else [str(j % 3) for j in range(config.n)]
            out += [Completion(p, [7] * (p + 1), t, [], "stop") for t in texts]
        return out

    def score(texts, records):
        rewards = []
        for t, r in zip(texts, records, strict=True):
            ok = t == r.reference
            rewards.append(
                Reward(
                    float(ok),
                    ok,
                    {"math": float(ok)},
                    {"math": Verdict(float(ok), ok, "ok", {"extracted": t})},
                )
            )
        return rewards

    spec = JobSpec.model_validate(
        {
            "eval": {
                "sets": {"first": "a.jsonl", "second": "b.jsonl"},
                "samples": 4,
                "k": [1, 2, 4, 8],
            }
        }
    )
    sets = {"first": _Prompts(["0", "1"]), "second": _Prompts(["2"])}
    seen = []
    metrics, results = evaluate_sets(
        sets, generate, score, spec, progress=lambda *a: seen.append(a)
    )
    assert calls == [(4, 1.0), (1, 0.0), (4, 1.0)]  # greedy once, for the first set
    assert seen == [("first", 0, 2), ("second", 1, 2)]
    assert metrics["eval/accuracy"] == 0.5  # greedy: prompt 0 right, prompt 1 wrong
    # samples "0","1","2","0": prompt 0 passes 2 of 4, prompt 1 passes 1 of 4
    assert metrics["eval/first/pass@1"] == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert metrics["eval/first/pass@4"] == 1.0
    assert metrics["eval/first/pass@2"] == pytest.approx(
        (pass_at_k(4, 2, 2) + pass_at_k(4, 1, 2)) / 2
    )
    assert metrics["eval/first/maj@4"] == pytest.approx(
        0.5
    )  # "0" wins both: right on prompt 0 only
    assert "eval/first/pass@8" not in metrics  # k > samples is skipped
    assert metrics["eval/second/pass@1"] == 0.25
    assert metrics["eval/first/length_mean"] == pytest.approx(1.5)
    assert results["second"].passed == [[False, False, True, False]]


def test_prompt_pass_rates_rank_the_longest_failing_prompts_first():
    rows = [
        {"id": "a", "prompt": "A?", "step": s, "passed": s in (2, 3)} for s in range(1, 9)
    ]  # passed at 2 and 3, failing since step 4
    rows += [{"id": "b", "prompt": "B?", "step": s, "passed": False} for s in range(3, 9)]
    rows += [{"id": "c", "prompt": "C?", "step": s, "passed": s == 8} for s in range(1, 9)]
    stats = prompt_pass_rates(rows)
    assert [(s["id"], s["failing_for"]) for s in stats] == [("b", 6), ("a", 5), ("c", 0)]
    b = stats[0]
    assert (b["samples"], b["passed"], b["last_passed_step"], b["first_step"]) == (6, 0, None, 3)
    assert stats[1]["pass_rate"] == 2 / 8 and stats[1]["last_passed_step"] == 3
    assert prompt_pass_rates([]) == []
