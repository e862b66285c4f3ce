"""The async loop (``algorithm.max_staleness``) on a real local Ray cluster with the real HF
engine and reward pool: rollouts are started ahead on the weights of their time, tagged with
that version, never more than k versions behind, and a resumed async run reproduces an
uninterrupted one step for step."""

from __future__ import annotations

import json
import shutil

import pytest

from rlvr.config import JobSpec
from rlvr.train import run
from rlvr.train.checkpoint import list_checkpoints
from rlvr.train.rundir import read_jsonl

pytestmark = pytest.mark.slow

ASYNC_METRICS = (
    "async/staleness_mean",
    "async/rollout_wait_s",
    "async/learner_wait_s",
    "async/rollout_busy_frac",
    "async/learner_busy_frac",
)


def _spec(model_dir, **algorithm) -> JobSpec:
    return JobSpec.model_validate(
        {
            "name": "async-test",
            "model": {"path": str(model_dir)},
            "data": {"train": "builtin:arithmetic?n=40", "eval": "builtin:arithmetic?n=4&seed=1"},
            "reward": {"verifiers": [{"name": "math"}], "workers": 1},
            "algorithm": {
                "group_size": 4,
                "prompts_per_step": 2,
                "lr": 1e-3,
                "max_steps": 4,
                **algorithm,  # (tis_cap unset: an async run's default, 2.0, is tested)
            },
            "rollout": {"max_new_tokens": 12, "temperature": 1.0},
            "checkpoint": {"every": 2, "keep": 3},
            "eval": {"every": 4, "at_start": False},
        }
    )


@pytest.fixture(scope="module")
def async_run(ray_cluster, random_model_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("async")
    summary = run(_spec(random_model_dir, max_staleness=1), run_dir, actor_cpus=0)
    return run_dir, summary


def _check_staleness(run_dir, k: int) -> None:
    """Step s's rollout starts at step s-k on the weights of step s-k-1 (the initial ones
    before that): its staleness when learned is min(s-1, k)."""
    records = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["step"] > 0]
    assert [r["async/staleness_mean"] for r in records] == [min(s - 1, k) for s in (1, 2, 3, 4)]
    for r in records:
        assert [m for m in ASYNC_METRICS if m not in r] == []
        assert 0.0 <= r["async/rollout_busy_frac"] <= 1.0
        assert 0.0 <= r["async/learner_busy_frac"] <= 1.0
        assert r["async/rollout_wait_s"] >= 0.0 and r["async/learner_wait_s"] >= 0.0
    assert records[-1]["mismatch/kl"] > 0  # the learner saw an older policy's tokens
    # ... with the truncated-IS weight an async run has unless its spec opts out
    assert json.loads((run_dir / "spec.json").read_text())["algorithm"]["tis_cap"] == 2.0


def test_one_step_off_policy_rollouts_lag_the_learner_by_one_version(async_run):
    run_dir, summary = async_run
    assert summary.status == "succeeded" and summary.step == 4
    _check_staleness(run_dir, 1)


def test_rollouts_never_lag_more_than_max_staleness(
    ray_cluster, random_model_dir, tmp_path, monkeypatch
):
    from rlvr.train.learner import Learner

    pushes: list[list[int] | None] = []
    push_weights = Learner.push_weights

    def spy(self, *args, **kwargs):
        pushes.append(kwargs.get("after_calls"))
        return push_weights(self, *args, **kwargs)

    monkeypatch.setattr(Learner, "push_weights", spy)
    summary = run(_spec(random_model_dir, max_staleness=2), tmp_path, actor_cpus=0)
    assert summary.status == "succeeded" and summary.step == 4
    _check_staleness(tmp_path, 2)
    # Every push names the rollouts already submitted to the engine (steps up to s + 2 when
    # step s's weights go out): an engine holds the weights until those have been sampled,
    # even if the push, from a learner actor, reaches it first (LoadOrder).
    assert pushes == [[3], [4], [4], [4]]


def test_a_checkpoint_stores_the_rollouts_started_for_later_steps(async_run):
    run_dir, summary = async_run
    assert summary.status == "succeeded"
    state = json.loads((run_dir / "checkpoints" / "step_2" / "trainer_state.json").read_text())
    (pending,) = state["pending_rollouts"]  # step 3, started at step 2 on version 1
    assert pending["step"] == 3 and pending["weights_version"] == 1
    assert len(pending["completions"]) == 2 * 4 and len(pending["indices"]) == 2
    final = json.loads((run_dir / "checkpoints" / "step_4" / "trainer_state.json").read_text())
    assert final["pending_rollouts"] == []  # nothing is started past max_steps


def test_a_resumed_async_run_reproduces_the_uninterrupted_one(
    async_run, random_model_dir, tmp_path
):
    run_dir, _ = async_run
    resumed = tmp_path / "run"
    shutil.copytree(run_dir, resumed)
    shutil.rmtree(resumed / "checkpoints" / "step_4")  # killed after step 4's metrics
    summary = run(_spec(random_model_dir, max_staleness=1), resumed, resume=True, actor_cpus=0)
    assert summary.status == "succeeded" and summary.step == 4
    assert [s for s, _ in list_checkpoints(resumed)] == [2, 4]
    again = {r["step"]: r for r in read_jsonl(resumed / "metrics.jsonl")}
    first = {r["step"]: r for r in read_jsonl(run_dir / "metrics.jsonl")}
    assert sorted(again) == sorted(first)
    # step 3's rollout came from the checkpoint: no engine time of this run, no made-up wait
    assert again[3]["async/learner_wait_s"] == 0.0
    for step in (3, 4):  # step 3 from the stored rollout, step 4 sampled on version 2 again
        for key in ("reward/mean", "response/length_mean", "loss", "entropy", "grad_norm",
                    "mismatch/kl", "async/staleness_mean"):  # fmt: skip
            assert again[step][key] == pytest.approx(first[step][key], rel=1e-4, abs=1e-9), (
                step,
                key,
            )


def test_max_staleness_is_bounded_and_named_in_the_error():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="max_staleness"):
        JobSpec.model_validate(
            {"name": "x", "model": {"path": "tiny:arithmetic"}, "data": {"train": "builtin:arithmetic"},
             "algorithm": {"max_staleness": 99}}
        )  # fmt: skip


def test_an_async_run_corrects_for_staleness_unless_the_spec_opts_out():
    from rlvr.config import ASYNC_TIS_CAP, AlgorithmSpec

    assert AlgorithmSpec(max_staleness=1).tis_cap == ASYNC_TIS_CAP == 2.0
    assert AlgorithmSpec(max_staleness=2, tis_cap=3.0).tis_cap == 3.0
    assert AlgorithmSpec(max_staleness=1, tis_cap=None).tis_cap is None  # explicit: off
    assert AlgorithmSpec().tis_cap is None  # a synchronous run samples the learner's weights
    # the saved spec (and a resume that reads it back) keeps the value the run used
    saved = AlgorithmSpec(max_staleness=1).model_dump()
    assert AlgorithmSpec.model_validate(saved).tis_cap == 2.0


@pytest.mark.parametrize("placement", ["auto", "split"])  # engine on a thread; engine actor
def test_an_async_runs_eval_runs_beside_the_next_step_and_changes_no_number(
    ray_cluster, random_model_dir, tmp_path, monkeypatch, rollouts_at_eval_start, placement
):
    """The next step's rollout is already on the engines (started a step earlier), so an
    eval queues behind it and the learner learns that step meanwhile; the later rollouts
    are submitted after the eval, on the same weights as with the eval between steps: every
    number matches a run whose evals stand between the steps."""
    from rlvr.plan import Plan

    spec = _spec(random_model_dir, max_staleness=1, max_steps=4)
    spec.eval.every, spec.eval.at_start, spec.checkpoint.every = 1, True, 3
    spec.placement.mode = placement
    queued = rollouts_at_eval_start
    run(spec, tmp_path / "beside", actor_cpus=0)
    beside, queued[:] = list(queued), []
    monkeypatch.setattr(Plan, "engines_work_beside_learner", property(lambda self: False))
    run(spec, tmp_path / "between", actor_cpus=0)
    # step 0: behind step 1's rollout only (step 2's is submitted after the eval); steps 1-2:
    # behind the next step's, started a step earlier; 3 (a checkpoint) and 4 (the last): waited
    assert beside == [[1], [2], [3], [4], []]
    assert queued == [[], [2], [3], [4], []]
    a = read_jsonl(tmp_path / "beside" / "metrics.jsonl")
    b = read_jsonl(tmp_path / "between" / "metrics.jsonl")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [0, 1, 2, 3, 4]
    for x, y in zip(a, b, strict=True):
        assert "eval/accuracy" in x and "time/eval_wait_s" in x, x["step"]
        for key in ("eval/accuracy", "eval/reward_mean", "reward/mean", "loss", "grad_norm",
                    "async/staleness_mean"):  # fmt: skip
            if key in y:
                assert x[key] == pytest.approx(y[key], rel=1e-6, abs=1e-9), (x["step"], key)
    assert [s for s, _ in list_checkpoints(tmp_path / "beside")] == [3, 4]


def test_an_async_run_with_weight_updates_mid_sequence_reports_them(
    ray_cluster, random_model_dir, tmp_path
):
    spec = _spec(random_model_dir, max_staleness=1)
    spec.rollout.mid_sequence_weight_updates = True
    summary = run(spec, tmp_path, actor_cpus=0)
    assert summary.status == "succeeded" and summary.step == 4
    records = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if r["step"] > 0]
    for r in records:
        assert 0.0 <= r["async/mid_sequence_frac"] <= 1.0
        assert r["async/staleness_mean"] <= 1  # first tokens' versions: never more than k
