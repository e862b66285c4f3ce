"""The reward pool: weighted verifier scores, the verdict that decides `passed`, per-row
verifiers, and misbehaving verifiers costing a reward of 0 instead of the job."""

from __future__ import annotations

import pytest
from _plugin_verifiers import CrashyVerifier, SleepyVerifier  # noqa: F401 - registers them

from rlvr.config import RewardSpec
from rlvr.data import PromptRecord
from rlvr.train.reward import RewardPool

GOOD = "<think>40 + 2 = 42</think><answer>42</answer>"
WRONG = "<think>40 + 2 = 43</think><answer>43</answer>"
NO_FORMAT = "42"


@pytest.fixture(scope="module")
def pool():
    spec = RewardSpec.model_validate(
        {
            "verifiers": [{"name": "math", "weight": 1.0}, {"name": "think_format", "weight": 0.1}],
            "workers": 2,
        }
    )
    with RewardPool(spec) as p:
        yield p


def test_reward_is_the_weighted_sum_and_math_decides_passed(pool):
    rec = PromptRecord("What is 40 + 2?", "42")
    good, wrong, bare = pool.score([GOOD, WRONG, NO_FORMAT], [rec, rec, rec])
    assert good.passed and good.scores == {"math": 1.0, "think_format": 1.0}
    assert good.total == pytest.approx(1.1)
    assert not wrong.passed and wrong.scores["math"] == 0.0
    assert wrong.total == pytest.approx(0.1 * wrong.scores["think_format"])
    assert set(good.verdicts) == {"math", "think_format"}
    assert bare.scores["think_format"] < 1.0


def test_a_row_can_name_its_own_verifier(pool):
    rec = PromptRecord(
        "Make 12 from [3, 4]", {"numbers": [3, 4], "target": 12}, verifier="countdown"
    )
    (r,) = pool.score(["<think>3*4=12</think><answer>3*4</answer>"], [rec])
    assert r.passed and set(r.scores) == {"countdown", "think_format"}


def test_hung_and_crashing_verifiers_give_zero_with_a_reason():
    spec = RewardSpec.model_validate(
        {
            "verifiers": [{"name": "test_sleepy"}, {"name": "test_crashy", "weight": 2.0}],
            "timeout_s": 1.0,
            "workers": 2,
        }
    )
    rec = PromptRecord("p", "r")
    with RewardPool(spec) as p:
        fine, slept, crashed = p.score(["fine", "please sleep", "crash now"], [rec] * 3)
    assert fine.total == pytest.approx(1.0 + 2.0 * 0.5) and fine.passed
    assert slept.verdicts["test_sleepy"].reason == "timeout" and slept.scores["test_sleepy"] == 0.0
    assert not slept.passed
    assert (
        crashed.verdicts["test_crashy"].reason == "error" and crashed.scores["test_crashy"] == 0.0
    )
    assert crashed.passed  # the first verifier still passed it


def test_a_malformed_reference_costs_only_its_row(pool):
    good = PromptRecord("Make 12", {"numbers": [3, 4], "target": 12}, verifier="countdown")
    bad = PromptRecord("Make ?", {"numbers": "three"}, verifier="countdown")
    r_good, r_bad = pool.score(["<answer>3*4</answer>", "<answer>3*4</answer>"], [good, bad])
    assert r_good.passed
    assert not r_bad.passed and r_bad.scores["countdown"] == 0.0
