"""Acceptance: the math verifier agrees with a hand-labelled set of (completion, gold,
expected verdict) cases on >= 99% of them, and every call returns within its timeout
+ 0.5 s (adversarial cases included: huge powers, deep nesting, empty input).

tests/data/math_cases.jsonl: one case a line, {"id", "category", "format", "completion",
"reference", "passed", "reason"?}. Labels are what a correct grader should say (written
by hand), not what any verifier outputs.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from verifiers import VerifierPool

CASES = [
    json.loads(line) for line in (Path(__file__).parents[1] / "data" / "math_cases.jsonl").open()
]
TIMEOUT_S = 3.0


def test_labelled_set_is_big_and_covers_the_categories():
    assert len(CASES) >= 300
    categories = {c["category"] for c in CASES}
    assert {
        "integer_separators", "decimals", "fractions", "mixed_numbers", "percent",
        "scientific_notation", "sqrt", "pi", "symbolic", "equations", "sets", "intervals",
        "tuples", "multiple_choice", "units_and_text", "latex_spacing", "think_only",
        "several_answers", "adversarial", "free_form",
    } <= categories  # fmt: skip
    assert sum(not c["passed"] for c in CASES) >= 100  # plenty of negatives


@pytest.fixture(scope="module")
def pool():
    with VerifierPool(workers=2, timeout_s=TIMEOUT_S) as p:
        p.verify_many([("math", {}, "<answer>1</answer>", "1")] * 2)  # workers ready
        yield p


def test_math_verifier_agrees_with_the_labelled_set_within_its_timeout(pool):
    def one(case: dict) -> tuple[dict, object, float]:
        t0 = time.monotonic()
        verdict = pool.verify_many([("math", {}, case["completion"], case["reference"])])[0]
        return case, verdict, time.monotonic() - t0

    with ThreadPoolExecutor(max_workers=2) as threads:  # one pool worker each
        results = list(threads.map(one, CASES))

    disagreements = [
        f"#{c['id']} {c['category']}: gold={c['reference']!r} expected passed={c['passed']}"
        f"{' reason=' + c['reason'] if 'reason' in c else ''}, got {v.reason} {v.details}"
        for c, v, _ in results
        if v.passed != c["passed"] or ("reason" in c and v.reason != c["reason"])
    ]
    agreement = 1 - len(disagreements) / len(CASES)
    assert agreement >= 0.99, "\n".join(disagreements)
    slowest = max(results, key=lambda r: r[2])
    assert slowest[2] <= TIMEOUT_S + 0.5, f"case #{slowest[0]['id']} took {slowest[2]:.2f}s"
    # Adversarial inputs either resolve or time out; none crashes a worker.
    assert all(v.reason != "error" for _, v, _ in results)
