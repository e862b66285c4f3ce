"""CPU threads for the trainer's torch work: the HF engine's decode and the learner's update
with 1 vs 2 intra-op threads, on the tiny arithmetic model.

Why it matters: on a small machine shared with other work, more threads than free cores
makes every op wait for the slowest thread. ``rlvr.rollout.hf.cpu_threads`` picks 1 thread
on machines with <= 4 cores because of these numbers.

Each configuration runs in a fresh process (torch's thread pool is per process):

* rollout: 16 prompts x 8 samples x up to 64 new tokens (temperature 0.7), tokens/s;
* learn: one GRPO update (forward + backward + AdamW) on that batch, seconds.

    .venv/bin/python bench/cpu_threads.py [--threads 1 2] [--busy 0 1] [--repeats 3]
                                          [--out bench/results/cpu_threads.json]

``--busy N`` runs each configuration again next to N busy-loop processes: what other
work on a small shared machine does to each choice.

Prints a table (median of the repeats) and writes JSON, with the load average, since
other processes change these numbers a lot.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._results import write_result


def _worker(threads: int, repeats: int) -> dict:
    import numpy as np
    import torch

    os.environ["RLVR_TORCH_THREADS"] = str(threads)
    from rlvr.data import load_prompts, render_prompt
    from rlvr.models import resolve_model
    from rlvr.rollout.base import SamplingConfig
    from rlvr.rollout.hf import HFEngine, HFEngineConfig
    from rlvr.train.algorithms import compute_advantages
    from rlvr.train.batch import make_train_batch
    from rlvr.train.learner import Learner, LearnerConfig

    model = str(resolve_model("tiny:arithmetic"))
    engine = HFEngine(HFEngineConfig(model=model))
    records = load_prompts("builtin:arithmetic?n=16&seed=3")
    tok = engine.tokenizer
    prompts = [
        tok(render_prompt(tok, r, "think"), add_special_tokens=False)["input_ids"] for r in records
    ]
    sampling = SamplingConfig(n=8, max_new_tokens=64, temperature=0.7, seed=0)
    learner = Learner(
        LearnerConfig(
            model_path=model, temperature=0.7, gen_budget=64, lr=3e-4, micro_batch_size=64
        )
    )
    assert torch.get_num_threads() == threads
    tok_s, learn_s = [], []
    for step in range(1, repeats + 1):
        t0 = time.perf_counter()
        completions = engine.generate(prompts, sampling)
        dt = time.perf_counter() - t0
        tok_s.append(sum(len(c.token_ids) for c in completions) / dt)
        rewards = np.random.default_rng(step).random(len(completions))
        adv = compute_advantages(rewards, [c.prompt_index for c in completions])
        batch = make_train_batch(prompts, completions, adv, engine.pad_id)
        t0 = time.perf_counter()
        learner.update(batch, step)
        learn_s.append(time.perf_counter() - t0)
    learner.shutdown()
    return {"threads": threads, "rollout_tok_s": tok_s, "learn_s": learn_s}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    root = Path(__file__).resolve().parents[1]
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(root / "bench" / "results" / "cpu_threads.json"))
    parser.add_argument(
        "--busy",
        type=int,
        nargs="+",
        default=[0, 1],
        help="also run with this many competing busy-loop processes (0 = none)",
    )
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.worker, args.repeats)))
        return 0

    from rlvr.models import resolve_model

    resolve_model("tiny:arithmetic")  # build once, outside the timing
    rows = []
    for busy in args.busy:
        # Competing CPU-bound processes (what other jobs on a shared machine look like).
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
        try:
            for threads in args.threads:
                load = os.getloadavg()[0]
                proc = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--worker",
                        str(threads),
                        "--repeats",
                        str(args.repeats),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                row["busy_processes"] = busy
                row["load_avg_before"] = load
                rows.append(row)
        finally:
            for h in hogs:
                h.kill()
                h.wait()
    print("busy procs | threads | rollout tok/s (median) | learn s (median) | load avg before")
    for r in rows:
        print(
            f"{r['busy_processes']} | {r['threads']} | {statistics.median(r['rollout_tok_s']):.0f} | "
            f"{statistics.median(r['learn_s']):.2f} | {r['load_avg_before']:.1f}"
        )
    result = {
        "bench": "cpu_threads",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "command": " ".join(sys.argv),
        "rows": rows,
    }
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
