"""Today's settings against the modern options on the countdown demo, side by side.

Runs ``examples/countdown.yaml`` (GRPO, token-mean, clip-higher) as the baseline and one or
more variants that add dynamic sampling with refill, the pass-rate curriculum and GSPO or
CISPO, each with ``--seeds`` seeds, on a local Ray cluster. Reports per variant the mean
(and per-seed) greedy eval accuracy at equal steps (each eval step) and at equal wall time
(the accuracy of the last eval reached within the baseline's mean training time), plus
seconds per step and refill rounds.

    .venv/bin/python bench/algorithms.py [--steps 100] [--seeds 0 1 2] [--eval-every 10]
        [--variants baseline refill_curriculum_cispo refill_curriculum_gspo]
        [--out bench/results/algorithms.json]

Prints a table and writes JSON. Other processes on the machine make the times pessimistic
(and the equal-time comparison noisy); the equal-step accuracies do not depend on load.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._results import run_header

ROOT = Path(__file__).resolve().parents[1]
REFILL_CURRICULUM = {
    "algorithm": {"dynamic_sampling": True, "max_refill_rounds": 2},
    "data": {"curriculum": {"retire_after_solved": 2, "prefer": "mixed"}},
}
VARIANTS: dict[str, dict[str, Any]] = {
    "baseline": {},  # examples/countdown.yaml as it is
    "refill_curriculum_cispo": {
        **REFILL_CURRICULUM,
        "algorithm": {**REFILL_CURRICULUM["algorithm"], "objective": "cispo", "mini_batches": 2},
    },
    "refill_curriculum_gspo": {
        **REFILL_CURRICULUM,
        "algorithm": {
            **REFILL_CURRICULUM["algorithm"],
            "ratio_level": "sequence",
            "clip_low": 3e-4,
            "clip_high": 4e-4,
            "mini_batches": 2,
        },
    },
}


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


def _one_run(spec_data: dict) -> dict:
    import numpy as np

    from rlvr.config import JobSpec
    from rlvr.train import run
    from rlvr.train.rundir import read_jsonl

    spec = JobSpec.model_validate(spec_data)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        run(spec, Path(tmp) / "run")
        wall = time.monotonic() - t0
        records = read_jsonl(Path(tmp) / "run" / "metrics.jsonl")
    start = records[0]
    steps = [r for r in records if r["step"] > 0]
    evals = [
        (r["step"], round(r["time"] - start["time"], 1), r["eval/accuracy"])
        for r in records
        if "eval/accuracy" in r
    ]
    return {
        "evals": evals,  # (step, training seconds since step 0, accuracy)
        "wall_s": round(wall, 1),
        "step_s": round(float(np.mean([r["time/step_s"] for r in steps])), 3),
        "refill_rounds_mean": round(
            float(np.mean([r.get("batch/refill_rounds", 0.0) for r in steps])), 3
        ),
        "groups_kept_frac_mean": round(
            float(np.mean([r["batch/groups_kept_frac"] for r in steps])), 3
        ),
    }


def _at_time(evals: list, budget_s: float) -> float:
    """The accuracy of the last eval reached within ``budget_s`` training seconds."""
    reached = [a for _, t, a in evals if t <= budget_s]
    return reached[-1] if reached else evals[0][2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", default=str(ROOT / "examples" / "countdown.yaml"))
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "algorithms.json"))
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    import numpy as np
    import yaml

    from rlvr.models import resolve_model

    base = yaml.safe_load(Path(args.spec).read_text())
    resolve_model(base["model"]["path"])  # build/cache outside the timing
    results: dict[str, list[dict]] = {}
    for name in args.variants:
        for seed in args.seeds:
            spec = _merge(base, VARIANTS[name])
            spec = _merge(
                spec,
                {
                    "name": f"bench-{name.replace('_', '-')}-{seed}",
                    "algorithm": {"seed": seed, "max_steps": args.steps},
                    "eval": {"every": args.eval_every},
                    "checkpoint": {"every": args.steps},
                },
            )
            r = _one_run(spec)
            r["seed"] = seed
            results.setdefault(name, []).append(r)
            print(f"{name} seed {seed}: {[(s, round(a, 3)) for s, _, a in r['evals']]}", flush=True)

    first = args.variants[0]
    budget = float(np.mean([r["evals"][-1][1] for r in results[first]]))
    print(f"\nequal steps: mean eval accuracy (seeds {args.seeds}); equal time: {budget:.0f} s")
    steps = [s for s, _, _ in results[first][0]["evals"]]
    print(
        "variant | "
        + " | ".join(f"step {s}" for s in steps)
        + " | at equal time | s/step | refill rounds"
    )
    summary = {}
    for name, runs in results.items():
        by_step = [float(np.mean([r["evals"][i][2] for r in runs])) for i in range(len(steps))]
        at_time = float(np.mean([_at_time(r["evals"], budget) for r in runs]))
        s_step = float(np.mean([r["step_s"] for r in runs]))
        rounds = float(np.mean([r["refill_rounds_mean"] for r in runs]))
        summary[name] = {
            "eval_accuracy_by_step": dict(zip(steps, by_step, strict=True)),
            "eval_accuracy_at_equal_time": at_time,
            "step_s": s_step,
            "refill_rounds_mean": rounds,
        }
        cells = " | ".join(f"{a:.1%}" for a in by_step)
        print(f"{name} | {cells} | {at_time:.1%} | {s_step:.2f} | {rounds:.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                **run_header("algorithms"),
                "variants": {k: VARIANTS[k] for k in args.variants},
                "equal_time_budget_s": budget,
                "summary": summary,
                "runs": results,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
