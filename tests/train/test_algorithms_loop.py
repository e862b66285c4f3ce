"""The new options through the real loop (local Ray, random tiny model): refill rounds,
the curriculum, overlong masking, CISPO with mini-batches and REINFORCE++-baseline with the
KL in the reward train and write their metrics; a resumed run redoes a step identically
(refill prompts and the curriculum's choice are functions of the checkpoint and (seed, step))."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from rlvr.config import JobSpec
from rlvr.train import run
from rlvr.train.checkpoint import list_checkpoints
from rlvr.train.rundir import read_jsonl

pytestmark = pytest.mark.slow


def _spec(model_dir, max_steps=3):
    return JobSpec.model_validate(
        {
            "name": "algorithms-loop-test",
            "model": {"path": str(model_dir)},
            "data": {
                "train": "builtin:arithmetic?n=40",
                "eval": "builtin:arithmetic?n=4&seed=1&split=test",
                "curriculum": {"retire_after_solved": 1, "revisit_failed_every": 2},
            },
            "reward": {
                "verifiers": [{"name": "math"}, {"name": "think_format", "weight": 0.1}],
                "workers": 1,
            },
            "algorithm": {
                "group_size": 4,
                "prompts_per_step": 3,
                "lr": 1e-3,
                "max_steps": max_steps,
                "estimator": "reinforce_pp_baseline",
                "kl_mode": "reward",
                "kl_coef": 0.01,
                "kl_estimator": "k1",
                "objective": "cispo",
                "mini_batches": 2,
                "dynamic_sampling": True,
                "max_refill_rounds": 2,
                "overlong": {"mode": "mask"},
            },
            "rollout": {"max_new_tokens": 12, "temperature": 1.0},
            "checkpoint": {"every": 2, "keep": 3},
            "eval": {"every": 10, "at_start": False},
        }
    )


def test_refill_curriculum_and_modern_losses_train_and_resume_identically(
    ray_cluster, random_model_dir, tmp_path
):
    first = tmp_path / "first"
    summary = run(_spec(random_model_dir), first, actor_cpus=0)
    assert summary.status == "succeeded" and summary.step == 3
    records = read_jsonl(first / "metrics.jsonl")
    steps = [r for r in records if r["step"] > 0]
    for rec in steps:
        assert 0 <= rec["batch/refill_rounds"] <= 2
        assert rec["curriculum/active"] + rec["curriculum/retired"] == 40
        assert math.isfinite(rec["loss"]) and math.isfinite(rec["kl"])
    ckpt = list_checkpoints(first)[-1][1]
    assert len(json.loads((ckpt / "trainer_state.json").read_text())["curriculum"]["passes"]) == 40

    resumed = tmp_path / "resumed"
    shutil.copytree(first, resumed)
    shutil.rmtree(resumed / "checkpoints" / "step_3")
    run(_spec(random_model_dir), resumed, resume=True, actor_cpus=0)
    again = {r["step"]: r for r in read_jsonl(resumed / "metrics.jsonl")}
    original = {r["step"]: r for r in records}
    for key in ("reward/mean", "batch/refill_rounds", "curriculum/unseen", "response/length_mean"):
        assert again[3][key] == pytest.approx(original[3][key], rel=1e-4), key
