"""What an asynchronous CPU run's sides cost each other in one process: the HF engine's
rollout and the learner's update, alone, beside each other, and beside each other with the
reward pool scoring, on the demo's model, prompts and batch.

A ``max_staleness: 1`` CPU run keeps its engine on a thread of the driver, beside the
learner, and scores each rollout on the driver's scoring thread (worker processes verify,
the thread sends them items and reads verdicts). This bench takes them apart, in one
process as the run has them:

* rollout: 16 prompts x 8 completions of <= 64 tokens (temperature 0.7), as in the demo;
* learn: one update on that rollout's batch (rewards from the demo's verifiers);
* score: one reward call for that rollout (math + think_format: 256 items, 2 workers),
  repeated every 0.25 s beside the others, as often as a step of the asynchronous demo;
  alone, also the CPU time of the calling thread (the scoring thread's share of the cores).

Each configuration: medians over ``--repeats`` calls. Prints a table and writes JSON.

One more setting takes the threads' share of the contention apart from the cores': the
rollout beside the same update looping in another process (spawned, its own interpreter, the
same batch), which shares the cores and the memory with the rollout but not the GIL. What
the rollout loses beside the learner's thread and not beside its process is the GIL's share.
Last, both alone again: a machine whose speed drifted during the run shows there.

    .venv/bin/python bench/contention.py [--repeats 15] [--out bench/results/contention.json]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import queue
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench._results import run_header, write_result  # noqa: E402


def learn_elsewhere(model: str, batch: Any, ready: Any, stop: Any, times: Any) -> None:
    """The update of ``batch`` in a loop, in a process of its own (the bench's other process),
    until ``stop``; each update's seconds into ``times``."""
    import yaml

    from rlvr.config import JobSpec
    from rlvr.train.learner import Learner, LearnerConfig  # (it sets torch's threads)

    spec = JobSpec.model_validate(yaml.safe_load((ROOT / "examples/arithmetic.yaml").read_text()))
    learner = Learner(LearnerConfig.from_spec(spec, model))
    learner.update(batch, 1)  # warm
    ready.set()
    while not stop.is_set():
        t0 = time.perf_counter()
        learner.update(batch, 1)
        times.put(time.perf_counter() - t0)
    learner.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "contention.json"))
    args = parser.parse_args()

    import torch
    import yaml

    from rlvr.config import JobSpec
    from rlvr.data import load_prompts, render_prompt
    from rlvr.models import resolve_model
    from rlvr.rollout.base import SamplingConfig
    from rlvr.rollout.hf import HFEngine, HFEngineConfig
    from rlvr.train.algorithms import compute_advantages
    from rlvr.train.batch import make_train_batch
    from rlvr.train.learner import Learner, LearnerConfig
    from rlvr.train.reward import RewardPool

    spec = JobSpec.model_validate(yaml.safe_load((ROOT / "examples/arithmetic.yaml").read_text()))
    model = str(resolve_model(spec.model.path))
    engine = HFEngine(HFEngineConfig(model=model))
    tok = engine.tokenizer
    records = load_prompts("builtin:arithmetic?n=16&seed=3")
    prompts = [
        tok(render_prompt(tok, r, spec.data.prompt_template), add_special_tokens=False)["input_ids"]
        for r in records
    ]
    sampling = SamplingConfig(n=8, max_new_tokens=64, temperature=0.7, seed=0)
    learner = Learner(LearnerConfig.from_spec(spec, model))
    rewards = RewardPool(spec.reward)
    completions = engine.generate(prompts, sampling)
    texts = [c.text for c in completions]
    owners = [records[c.prompt_index] for c in completions]
    scored = rewards.score(texts, owners)
    adv = compute_advantages([r.total for r in scored], [c.prompt_index for c in completions])
    batch = make_train_batch(prompts, completions, adv, engine.pad_id)

    def timed(fn) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    def rollout() -> float:
        with torch.random.fork_rng(devices=[]):  # as the run's engine thread does
            return timed(lambda: engine.generate(prompts, sampling))

    def learn() -> float:
        return timed(lambda: learner.update(batch, 1))

    def score() -> float:
        return timed(lambda: rewards.score(texts, owners))

    def score_cpu() -> float:
        """The CPU time the calling thread spends on one reward call (sending items to the
        workers, reading their verdicts): taken from whatever runs beside it."""
        t0 = time.thread_time()
        rewards.score(texts, owners)
        return time.thread_time() - t0

    for _ in range(2):  # warm: allocator, the verifiers' caches
        rollout(), learn(), score()

    def beside(main, others: list) -> tuple[list[float], dict[str, list[float]]]:
        """``main`` repeated on this thread while each of ``others`` (name, fn, pause) loops
        on a thread of its own; the times of all."""
        stop = threading.Event()
        seen: dict[str, list[float]] = {name: [] for name, _, _ in others}

        def loop(name: str, fn, pause: float) -> None:
            while not stop.is_set():
                seen[name].append(fn())
                stop.wait(pause)

        threads = [threading.Thread(target=loop, args=o) for o in others]
        for t in threads:
            t.start()
        time.sleep(0.3)
        times = [main() for _ in range(args.repeats)]
        stop.set()
        for t in threads:
            t.join()
        return times, seen

    med = statistics.median
    rows = []
    alone = {"rollout": [rollout() for _ in range(args.repeats)],
             "learn": [learn() for _ in range(args.repeats)],
             "score": [score() for _ in range(args.repeats)],
             "score_cpu": [score_cpu() for _ in range(args.repeats)]}  # fmt: skip
    rows.append({"setting": "alone", **{k: med(v) for k, v in alone.items()}})
    learns, seen = beside(learn, [("rollout", rollout, 0.0)])
    rows.append({"setting": "rollout and learn beside each other",
                 "rollout": med(seen["rollout"]), "learn": med(learns)})  # fmt: skip
    learns, seen = beside(learn, [("rollout", rollout, 0.0), ("score", score, 0.25)])
    rows.append({"setting": "... and a reward call every 0.25 s", "rollout": med(seen["rollout"]),
                 "learn": med(learns), "score": med(seen["score"])})  # fmt: skip
    # the same update looping in another process: the cores and memory shared, not the GIL
    ctx = multiprocessing.get_context("spawn")
    ready, stop, times = ctx.Event(), ctx.Event(), ctx.Queue()
    other = ctx.Process(target=learn_elsewhere, args=(model, batch, ready, stop, times))
    other.start()
    try:
        if not ready.wait(timeout=300):
            raise SystemExit("the learner process did not start within 300 s")
        time.sleep(0.3)
        rollouts = [rollout() for _ in range(args.repeats)]
    finally:
        stop.set()
        other.join(timeout=60)
        if other.is_alive():
            other.kill()
    learns = []
    with contextlib.suppress(queue.Empty):  # (a Queue's empty() is not reliable)
        while True:
            learns.append(times.get(timeout=1.0))
    rows.append({"setting": "rollout beside learn in another process",
                 "rollout": med(rollouts), "learn": med(learns)})  # fmt: skip
    # alone once more: a machine whose speed drifted during the run shows here
    rows.append({"setting": "alone, again", "rollout": med([rollout() for _ in range(args.repeats)]),
                 "learn": med([learn() for _ in range(args.repeats)])})  # fmt: skip
    rewards.close()
    learner.shutdown()

    print(f"{'setting':40s} | rollout ms | learn ms | reward call ms | caller CPU ms")
    for r in rows:
        cells = [
            f"{r[k] * 1000:.0f}" if k in r else ""
            for k in ("rollout", "learn", "score", "score_cpu")
        ]
        print(f"{r['setting']:40s} | " + " | ".join(cells))
    write_result(args.out, {**run_header("contention", root=ROOT), "repeats": args.repeats,
                            "rows": rows})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
