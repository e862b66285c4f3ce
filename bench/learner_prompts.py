"""The learner's update on demo batches: how it forwards the prompts.

Three demo rollouts (16 prompts x 8 completions, temperature 0.7, the demo's verifiers),
each learned on by the demo's learner (one thread) in three ways, interleaved, ``--reps``
times each after two warm-up updates:

- ``preamble once``: the default: the system preamble every prompt starts with (34 of the
  demo's 46 prompt tokens) is forwarded once, each prompt's rest once for its group, then the
  completions against their prompt's cached keys and values;
- ``each prompt once``: the preamble forwarded with every distinct prompt;
- ``full forward``: every row forwards its own prompt (``model.share_prompt_forward: false``).

The update changes the weights each time; the work per update does not. Prints medians per
batch and writes JSON.

    .venv/bin/python bench/learner_prompts.py [--reps 6] [--out bench/results/learner_prompts.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench._results import run_header, write_result  # noqa: E402

SPEC = ROOT / "examples" / "arithmetic.yaml"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=6)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "learner_prompts.json"))
    args = parser.parse_args()

    import yaml

    import rlvr.models.causal_lm as causal_lm
    from rlvr.config import JobSpec
    from rlvr.data import load_prompts, render_prompt
    from rlvr.models import resolve_model
    from rlvr.rollout.base import SamplingConfig
    from rlvr.rollout.hf import HFEngine, HFEngineConfig
    from rlvr.train.algorithms import compute_advantages
    from rlvr.train.batch import make_train_batch
    from rlvr.train.learner import Learner, LearnerConfig
    from rlvr.train.reward import RewardPool

    spec = JobSpec.model_validate(yaml.safe_load(SPEC.read_text()))
    model = str(resolve_model(spec.model.path))
    engine = HFEngine(HFEngineConfig(model=model))
    tok = engine.tokenizer
    preamble_min = causal_lm.MIN_SHARED_PREFIX
    ways = {  # name: (share_prompt_forward, the preamble threshold)
        "preamble once": (True, preamble_min),
        "each prompt once": (True, 10**9),
        "full forward": (False, preamble_min),
    }
    rows = []
    with RewardPool(spec.reward) as rewards:
        for seed in (3, 4, 5):
            records = load_prompts(f"builtin:arithmetic?n=16&seed={seed}")
            prompts = [
                tok(render_prompt(tok, r, spec.data.prompt_template), add_special_tokens=False)[
                    "input_ids"
                ]
                for r in records
            ]
            sampling = SamplingConfig(n=8, max_new_tokens=64, temperature=0.7, seed=seed)
            completions = engine.generate(prompts, sampling)
            scored = rewards.score(
                [c.text for c in completions], [records[c.prompt_index] for c in completions]
            )
            adv = compute_advantages(
                [r.total for r in scored], [c.prompt_index for c in completions]
            )
            batch = make_train_batch(prompts, completions, adv, engine.pad_id)
            learners = {}
            for name, (share, _) in ways.items():
                config = LearnerConfig.from_spec(spec, model)
                config.share_prompt_forward = share
                learners[name] = Learner(config)
            times: dict[str, list[float]] = {name: [] for name in ways}
            for rep in range(args.reps + 2):
                for name, (_, threshold) in ways.items():
                    causal_lm.MIN_SHARED_PREFIX = threshold
                    t0 = time.perf_counter()
                    learners[name].update(batch, 1)
                    if rep >= 2:  # two warm-up updates
                        times[name].append(time.perf_counter() - t0)
            causal_lm.MIN_SHARED_PREFIX = preamble_min
            for learner in learners.values():
                learner.shutdown()
            rows.append(
                {"seed": seed, "rows": int(batch["input_ids"].shape[0]),
                 "ms": {n: statistics.median(t) * 1000 for n, t in times.items()}}
            )  # fmt: skip

    print(f"{'batch':>12}" + "".join(f"{n:>20}" for n in ways))
    for r in rows:
        print(f"{'seed ' + str(r['seed']):>12}" + "".join(f"{r['ms'][n]:>17.0f} ms" for n in ways))
    means = {n: statistics.mean(r["ms"][n] for r in rows) for n in ways}
    print(f"{'mean':>12}" + "".join(f"{means[n]:>17.0f} ms" for n in ways))
    write_result(
        args.out,
        {**run_header("learner_prompts", SPEC, ROOT), "reps": args.reps, "rows": rows,
         "mean_ms": means},
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
