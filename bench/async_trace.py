"""Where a demo step's time goes, on each thread: a traced ``rlvr train`` of the demo spec.

Runs ``examples/arithmetic.yaml`` in this process with ``algorithm.max_staleness`` set and
timestamps, on whichever thread runs them, the learner's update and weight push, the
engine's sampling, each reward call and the step's rollout metrics. Then, over the steps
between evals (an eval step's push waits for the eval):

* update / push / sample / reward call / rollout metrics: medians of their durations;
* learner gap: from the end of a push to the start of the next update (the step's metrics,
  its row, the next step's batch: the learner's thread doing something else);
* engine idle: from the end of a rollout's sampling to the start of the next one;
* step: the median time between the starts of two updates.

Which side the loop waits for: in an asynchronous run, the side with no idle time.

    .venv/bin/python bench/async_trace.py [--staleness 1] [--seed 0] [--steps 40]
                                          [--out bench/results/async_trace.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench._results import run_header, write_result  # noqa: E402

SPEC = ROOT / "examples" / "arithmetic.yaml"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--staleness", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "async_trace.json"))
    args = parser.parse_args()

    import yaml

    from rlvr.config import JobSpec
    from rlvr.rollout.hf import HFEngine
    from rlvr.train import loop, run
    from rlvr.train.learner import Learner
    from rlvr.train.reward import RewardPool

    events: list[tuple[str, str, float, float]] = []  # (what, thread, start, end)

    def traced(owner, name: str, what: str) -> None:
        real = getattr(owner, name)

        def call(*a, **kw):
            t0 = time.perf_counter()
            try:
                return real(*a, **kw)
            finally:
                events.append((what, threading.current_thread().name, t0, time.perf_counter()))

        setattr(owner, name, call)

    traced(Learner, "update", "update")
    traced(Learner, "push_weights", "push")
    traced(HFEngine, "_sample", "sample")
    traced(RewardPool, "score", "reward call")
    traced(loop, "_rollout_metrics", "rollout metrics")

    raw = yaml.safe_load(SPEC.read_text())
    raw["algorithm"].update(max_staleness=args.staleness, seed=args.seed, max_steps=args.steps)
    raw["checkpoint"] = {"every": args.steps}
    spec = JobSpec.model_validate(raw)
    with tempfile.TemporaryDirectory() as tmp:
        run(spec, Path(tmp) / "run")

    def of(what: str) -> list[tuple[str, str, float, float]]:
        return sorted((e for e in events if e[0] == what), key=lambda e: e[2])

    updates, pushes = of("update"), of("push")
    if len(updates) != len(pushes):
        raise SystemExit(f"{len(updates)} updates but {len(pushes)} pushes: a step learned nothing")
    # updates[i] is step i + 1's. An eval of step s (and of step 0) runs beside step s + 1,
    # whose push waits for it: leave those steps out.
    evals = {0} | {s for s in range(1, args.steps + 1) if s % spec.eval.every == 0}
    plain = [i for i in range(len(updates) - 1) if i not in evals]
    samples = [e for e in of("sample") if e[1].startswith("rlvr-engine")]  # not evals' threads
    gaps = [updates[i + 1][2] - pushes[i][3] for i in plain]
    step_s = [updates[i + 1][2] - updates[i][2] for i in plain]
    idle = [b[2] - a[3] for a, b in zip(samples, samples[1:], strict=False)]
    med = statistics.median
    rows = {
        "step": med(step_s),
        "update": med(updates[i][3] - updates[i][2] for i in plain),
        "push": med(pushes[i][3] - pushes[i][2] for i in plain),
        "learner gap (push end to next update)": med(gaps),
        "sample (engine thread)": med(e[3] - e[2] for e in samples),
        "engine idle (between samples)": med(idle) if idle else 0.0,
        "reward call": med(e[3] - e[2] for e in of("reward call")),
        "rollout metrics": med(e[3] - e[2] for e in of("rollout metrics")),
    }
    threads = sorted({e[1] for e in of("rollout metrics")})
    print(f"max_staleness {args.staleness}, seed {args.seed}: medians over {len(plain)} steps")
    for name, value in rows.items():
        print(f"{name:40s} {value * 1000:8.1f} ms")
    print(f"rollout metrics computed on: {', '.join(threads)}")
    write_result(
        args.out,
        {**run_header("async_trace", SPEC, ROOT), "staleness": args.staleness,
         "seed": args.seed, "steps": args.steps, "medians_s": rows,
         "metrics_threads": threads},
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
