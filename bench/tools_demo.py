"""The learned-tool-use demo (``examples/tools.yaml``): per-step held-out accuracy and tool-call
rate, for several seeds.

For each model seed (``tiny:tools?seed=N``: the warm start) and each run seed
(``algorithm.seed``: sampling and order) it builds the model if needed (timed: the build's
own report), runs the spec with :func:`rlvr.train.run` on a local Ray cluster and reports:

* greedy held-out accuracy at every eval step, and the gain;
* ``tools/calls_mean`` (calls per training sample, temperature 1) at every step;
* wall seconds of the training loop (step 0's eval to the last step) and of the whole call.

    .venv/bin/python bench/tools_demo.py [--seeds 0 1] [--model-seeds 0 1]
                                         [--out bench/results/tools_demo.json]

Prints a table per run and a summary; writes JSON. Other processes on the machine make
every time here pessimistic.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._results import run_header, write_result

ROOT = Path(__file__).resolve().parents[1]


def _build(model_path: str) -> dict:
    """The model's directory and what its build measured (its rlvr_tiny.json)."""
    from rlvr.models import resolve_model

    t0 = time.monotonic()
    path = resolve_model(model_path)
    meta = json.loads((path / "rlvr_tiny.json").read_text())
    ws = meta["report"].get("warm_start", {})
    return {
        "model": model_path,
        "cached": time.monotonic() - t0 < 5,
        "build_s": meta["report"]["seconds"],
        "warm_start_steps": ws.get("steps"),
        "valid_call_probability": ws.get("valid_call_probability"),
        "valid_tool_accuracy": ws.get("valid_tool_accuracy"),
        "valid_direct_accuracy": ws.get("valid_direct_accuracy"),
    }


def _one_run(spec_path: Path, model_path: str, seed: int) -> dict:
    from rlvr.config import JobSpec
    from rlvr.train import run
    from rlvr.train.rundir import read_jsonl

    spec = JobSpec.from_file(spec_path)
    spec.model.path = model_path
    spec.algorithm.seed = seed
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        summary = run(spec, Path(tmp) / "run")
        wall = time.monotonic() - t0
        records = read_jsonl(Path(tmp) / "run" / "metrics.jsonl")
    start = records[0]
    steps = [
        {
            "step": r["step"],
            "t_s": round(r["time"] - start["time"], 1),
            "eval_accuracy": r.get("eval/accuracy"),
            "train_accuracy": r.get("accuracy"),
            "calls_mean": r.get("tools/calls_mean"),
            "error_frac": r.get("tools/error_frac"),
        }
        for r in records
    ]
    evals = [s for s in steps if s["eval_accuracy"] is not None]
    first20 = next(
        (s for s in evals if s["eval_accuracy"] - evals[0]["eval_accuracy"] >= 0.2), None
    )
    return {
        "model": model_path,
        "seed": seed,
        "status": summary.status,
        "initial_eval_accuracy": summary.initial_eval_accuracy,
        "final_eval_accuracy": summary.final_eval_accuracy,
        "gain_points": round(
            (summary.final_eval_accuracy - summary.initial_eval_accuracy) * 100, 1
        ),
        "plus20_at_step": None if first20 is None else first20["step"],
        "plus20_after_s": None if first20 is None else first20["t_s"],
        "calls_first": steps[1]["calls_mean"],
        "calls_last": steps[-1]["calls_mean"],
        "train_loop_s": steps[-1]["t_s"],
        "wall_s": round(wall, 1),
        "steps": steps,
    }


def _pct(x: float | None) -> str:
    return "" if x is None else f"{x:.1%}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", default=str(ROOT / "examples" / "tools.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--model-seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "tools_demo.json"))
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    builds, runs = [], []
    for ms in args.model_seeds:
        model = "tiny:tools" if ms == 0 else f"tiny:tools?seed={ms}"
        builds.append(_build(model))
        for seed in args.seeds:
            r = _one_run(Path(args.spec), model, seed)
            runs.append(r)
            print(f"\n{model}, algorithm.seed {seed}: step | t s | eval acc | train acc | calls")
            for s in r["steps"]:
                print(
                    f"{s['step']:>3} | {s['t_s']:>5} | {_pct(s['eval_accuracy']):>6} | "
                    f"{_pct(s['train_accuracy']):>6} | {s['calls_mean'] or 0:.2f}"
                )
    print("\nmodel | seed | eval acc | gain | +20 pt at | calls/sample | loop s | wall s")
    for r in runs:
        at = (
            "-"
            if r["plus20_at_step"] is None
            else f"step {r['plus20_at_step']} ({r['plus20_after_s']} s)"
        )
        print(
            f"{r['model']} | {r['seed']} | {_pct(r['initial_eval_accuracy'])} -> "
            f"{_pct(r['final_eval_accuracy'])} | {r['gain_points']:+.1f} | {at} | "
            f"{r['calls_first']:.2f} -> {r['calls_last']:.2f} | {r['train_loop_s']} | {r['wall_s']}"
        )
    for b in builds:
        print(
            f"{b['model']}: build {b['build_s']} s ({'cached' if b['cached'] else 'built now'}), "
            f"P(call) {_pct(b['valid_call_probability'])}, through the tool "
            f"{_pct(b['valid_tool_accuracy'])}, direct {_pct(b['valid_direct_accuracy'])}"
        )
    result = {**run_header("tools_demo", args.spec, ROOT), "builds": builds, "runs": runs}
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
