"""The pass-rate curriculum: retirement, the preference weights (against the formulas of the
module docstring, recomputed here), revisits of always-failed prompts, a choice that depends
on (record, seed, step) only, so a record restored from a checkpoint chooses the same."""

from __future__ import annotations

import json

import pytest

from rlvr.config import CurriculumSpec, JobSpec
from rlvr.train.curriculum import FAILED_WEIGHT, Curriculum


def _cur(**kw) -> Curriculum:
    c = Curriculum(6, CurriculumSpec(**kw))
    c.record(1, 0, [True] * 4)  # solved
    c.record(1, 1, [True, False, False, False])  # p = 1/4
    c.record(1, 2, [True, True, False, False])  # p = 1/2
    c.record(1, 3, [False] * 4)  # failed
    return c  # 4 and 5 never seen


def test_mixed_preference_weights_follow_the_formula():
    w = _cur(retire_after_solved=0, revisit_failed_every=5).weights(step=2)
    mixed = [0.5 + 4 * p * (1 - p) for p in (1.0, 0.25, 0.5)]
    assert w.tolist() == pytest.approx(mixed + [FAILED_WEIGHT, 1.0, 1.0])
    assert w[2] > w[1] > w[0]  # the prompts where GRPO learns come first


def test_hard_preference_and_none():
    hard = _cur(retire_after_solved=0, prefer="hard").weights(step=2)
    assert hard[:3].tolist() == pytest.approx([0.5, 0.5 + 0.75, 0.5 + 0.5])
    flat = _cur(retire_after_solved=0, prefer="none").weights(step=2)
    assert flat.tolist() == pytest.approx([1, 1, 1, FAILED_WEIGHT, 1, 1])


def test_prompts_solved_n_times_in_a_row_retire_and_a_failure_resets_the_run():
    c = _cur(retire_after_solved=2)
    assert c.weights(2)[0] > 0
    c.record(2, 0, [True] * 4)
    assert c.weights(3)[0] == 0 and c.metrics()["curriculum/retired"] == 1
    c2 = _cur(retire_after_solved=2)
    c2.record(2, 0, [True, True, True, False])
    c2.record(3, 0, [True] * 4)
    assert c2.weights(4)[0] > 0  # the run restarted at the failure


def test_always_failed_prompts_rest_then_are_revisited():
    c = _cur(revisit_failed_every=3)
    assert c.weights(3)[3] == FAILED_WEIGHT  # seen at step 1: 2 steps ago
    assert c.weights(4)[3] == 1.0  # 3 steps: revisit at full weight
    c.record(4, 3, [False, True, False, False])  # once solved, a normal mixed prompt
    assert c.weights(5)[3] == pytest.approx(0.5 + 4 * 0.25 * 0.75)


def test_the_choice_is_a_function_of_the_record_seed_and_step_and_survives_a_checkpoint():
    c = _cur(retire_after_solved=1)
    picks = c.choose(step=7, size=3, seed=11)
    assert picks == c.choose(step=7, size=3, seed=11)
    assert 0 not in picks and len(set(picks)) == 3  # retired; without replacement
    restored = Curriculum(6, CurriculumSpec(retire_after_solved=1))
    restored.load_state_dict(json.loads(json.dumps(c.state_dict())))  # as trainer_state.json
    assert restored.choose(step=7, size=3, seed=11) == picks
    with pytest.raises(ValueError, match="data.train changed"):
        Curriculum(5, CurriculumSpec()).load_state_dict(c.state_dict())


def test_metrics_count_active_retired_and_a_pass_rate_histogram():
    m = _cur(retire_after_solved=1).metrics()
    assert m == {
        "curriculum/active": 5.0,
        "curriculum/retired": 1.0,
        "curriculum/unseen": 2.0,
        "curriculum/pass_rate_eq0": 1.0,
        "curriculum/pass_rate_lt50": 1.0,
        "curriculum/pass_rate_ge50": 1.0,
        "curriculum/pass_rate_eq1": 1.0,
    }


def test_every_prompt_retired_falls_back_to_all_of_them():
    c = Curriculum(2, CurriculumSpec(retire_after_solved=1))
    c.record(1, 0, [True]), c.record(1, 1, [True])
    assert sorted(set(c.choose(2, 4, seed=0))) <= [0, 1]


def test_job_spec_takes_a_curriculum_and_names_a_bad_field():
    spec = JobSpec(data={"curriculum": {"retire_after_solved": 2, "prefer": "hard"}})
    assert spec.data.curriculum.prefer == "hard"
    with pytest.raises(ValueError, match="prefer"):
        JobSpec(data={"curriculum": {"prefer": "easy"}})
