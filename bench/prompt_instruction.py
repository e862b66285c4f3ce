"""Where an instruction goes in the prompt, and what it does to a small chat model's
greedy accuracy: none, as the system prompt (``data.system_prompt``), or after the question
(``data.instruction``).

The model (default ``smollm2-135m-instruct``, which needs ``rlvr[models]``) answers the
held-out 2-digit additions of ``examples/smollm2-arithmetic.yaml`` greedily; prompts are
rendered by the product's own ``render_prompt`` from a ``DataSpec`` and scored by the
``math`` verifier with ``require_number``, as the training run scores them.

    .venv/bin/python bench/prompt_instruction.py [--model smollm2-135m-instruct] [--n 64]
        [--instruction "Reply with just the number."] [--max-new-tokens 24]
        [--out bench/results/prompt_instruction.json]

Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench._results import run_header, write_result  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--instruction", default="Reply with just the number.")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "prompt_instruction.json"))
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlvr.config import DataSpec
    from rlvr.data import load_prompts, render_prompt
    from rlvr.models import resolve_model
    from rlvr.models.tiny import greedy_completions
    from verifiers import get_verifier

    path = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    records = load_prompts(f"builtin:arithmetic?n={args.n}&seed=1&split=test")
    verifier = get_verifier("math", require_number=True)
    arms = {
        "no instruction": DataSpec(template="plain"),
        "as the system prompt": DataSpec(template="plain", system_prompt=args.instruction),
        "after the question": DataSpec(template="plain", instruction=args.instruction),
    }
    rows = []
    print(f"| placement | right (of {len(records)}) | accuracy | first reply |")
    print("|---|---|---|---|")
    for name, data in arms.items():
        texts = [render_prompt(tokenizer, r, data.prompt_template) for r in records]
        replies = greedy_completions(model, tokenizer, texts, max_new_tokens=args.max_new_tokens)
        right = sum(
            verifier.verify(c, r.reference).score == 1.0
            for c, r in zip(replies, records, strict=True)
        )
        rows.append({"placement": name, "right": right, "n": len(records),
                     "accuracy": right / len(records), "examples": replies[:4]})  # fmt: skip
        print(f"| {name} | {right} | {right / len(records):.1%} | {replies[0]!r} |", flush=True)
    write_result(args.out, {**run_header("prompt_instruction", root=ROOT), "model": args.model,
                            "instruction": args.instruction, "rows": rows})  # fmt: skip


if __name__ == "__main__":
    main()
