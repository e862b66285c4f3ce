"""A training run with tools enabled, end to end on the random model: the engines get the
job's tools, tool calls really run mid-generation, the learner trains on the masked batch,
and the step metrics and sample rows carry the tool use.

An untrained model writes no ``<tool ...>`` calls, so the job's markers are single
characters the random model does write (``<`` opens a call, ``>`` closes it; outputs go in
``{...}``): the calculator is called, mostly with nonsense, and answers with errors.
"""

from __future__ import annotations

import pytest

from rlvr.config import JobSpec
from rlvr.train import run
from rlvr.train.rundir import read_jsonl

TOOL_METRICS = ["tools/calls_mean", "tools/error_frac", "tools/time_s", "tools/turns_mean"]


@pytest.mark.slow
def test_a_run_with_tools_calls_them_and_reports_them(ray_cluster, random_model_dir, tmp_path):
    spec = JobSpec.model_validate(
        {
            "name": "tools-loop",
            "model": {"path": str(random_model_dir)},
            "data": {"train": "builtin:arithmetic?n=20", "eval": None},
            "reward": {"verifiers": [{"name": "math"}], "workers": 1},
            "algorithm": {"group_size": 4, "prompts_per_step": 3, "lr": 1e-3, "max_steps": 2},
            "rollout": {"max_new_tokens": 40, "temperature": 1.0},
            "checkpoint": {"every": 2},
            "tools": {
                "enabled": ["calculator"],
                "max_turns": 3,
                "max_output_tokens": 6,
                "markers": {
                    "call_open": "<",
                    "call_close": ">",
                    "output_open": "{",
                    "output_close": "}",
                },
            },
        }
    )
    summary = run(spec, tmp_path, actor_cpus=0)
    assert summary.status == "succeeded" and summary.step == 2
    records = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if r["step"] > 0]
    assert len(records) == 2
    for rec in records:
        assert all(k in rec for k in TOOL_METRICS), rec
        assert rec["tools/turns_mean"] >= 1.0
    assert sum(r["tools/calls_mean"] for r in records) > 0  # calls really ran
    assert any(r["tools/error_frac"] > 0 for r in records)  # nonsense arithmetic fails
    samples = read_jsonl(tmp_path / "samples.jsonl")
    assert samples and all("turns" in s for s in samples)
    for s in samples:
        assert {t["kind"] for t in s["turns"]} <= {"model", "tool_call", "tool_output"}
