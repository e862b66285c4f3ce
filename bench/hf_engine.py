"""The CPU engine on the demo's two kinds of call: its eval (200 prompts, greedy) and one
training step's rollout (16 prompts x 8 samples at temperature 0.7), ``max_new_tokens`` 64.

Arms, in one process on the same prompts, each timed as the median of ``--reps`` calls
after a warm-up call:

- ``HFEngine``: the engine as the demo runs it (a prefix every prompt of a call shares is
  prefilled once, each prompt's rest once for its samples; rows leave the batch as they end);
- ``HFEngine, share_prefix=False``: every prompt prefilled whole;
- ``transformers generate``: ``model.generate`` on the same left-padded batch (greedy, or
  sampling with ``num_return_sequences``), the peer the engine replaced.

Also checks that the first two arms give the same tokens.

    .venv/bin/python bench/hf_engine.py [--reps 5] [--threads 1] [--out bench/results/hf_engine.json]
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
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "hf_engine.json"))
    args = parser.parse_args()

    import torch

    from rlvr.models import resolve_model
    from rlvr.rollout.base import SamplingConfig
    from rlvr.rollout.hf import HFEngine, HFEngineConfig
    from rlvr.train.loop import _load_prompts

    path = str(resolve_model("tiny:arithmetic"))
    shared = HFEngine(HFEngineConfig(model=path, num_threads=args.threads))
    whole = HFEngine(HFEngineConfig(model=path, num_threads=args.threads, share_prefix=False))
    tok = shared.tokenizer
    evals = _load_prompts("builtin:arithmetic?n=200&seed=1&split=test", tok, "think", 512, "eval")
    train = _load_prompts("builtin:arithmetic?n=2000&split=train", tok, "think", 512, "train")
    calls = {
        "eval (200 prompts, greedy)": (
            evals.token_ids,
            SamplingConfig(n=1, max_new_tokens=64, temperature=0.0),
        ),
        "rollout (16 prompts x 8)": (
            train.token_ids[:16],
            SamplingConfig(n=8, max_new_tokens=64, temperature=0.7, seed=0),
        ),
    }

    def timed(fn) -> float:
        fn()  # warm-up
        runs = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - t0)
        return statistics.median(runs)

    def hf_generate(prompts: list[list[int]], sampling: SamplingConfig) -> None:
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[shared.pad_id] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        greedy = sampling.temperature == 0
        with torch.inference_mode():
            shared.model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=sampling.max_new_tokens,
                do_sample=not greedy,
                **({} if greedy else {"temperature": sampling.temperature, "top_k": 0}),
                num_return_sequences=1 if greedy else sampling.n,
                pad_token_id=shared.pad_id,
                eos_token_id=shared.eos_ids,
            )

    rows = []
    for name, (prompts, sampling) in calls.items():
        a = shared.generate(prompts, sampling)
        b = whole.generate(prompts, sampling)
        same = sum(x.token_ids == y.token_ids for x, y in zip(a, b, strict=True))
        arms = {
            "HFEngine": timed(lambda p=prompts, s=sampling: shared.generate(p, s)),
            "HFEngine, share_prefix=False": timed(
                lambda p=prompts, s=sampling: whole.generate(p, s)
            ),
            "transformers generate": timed(lambda p=prompts, s=sampling: hf_generate(p, s)),
        }
        rows.append(
            {"call": name, "ms": {k: v * 1000 for k, v in arms.items()},
             "same_tokens": f"{same}/{len(a)}"}
        )  # fmt: skip

    names = list(rows[0]["ms"])
    print(f"{'call':28s}" + "".join(f"{n:>30s}" for n in names) + "   same tokens")
    for r in rows:
        print(f"{r['call']:28s}" + "".join(f"{r['ms'][n]:>27.0f} ms" for n in names)
              + f"   {r['same_tokens']}")  # fmt: skip
    write_result(
        args.out,
        {**run_header("hf_engine", SPEC, ROOT), "reps": args.reps, "threads": args.threads,
         "rows": rows},
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
