"""Tiny models: how long a build takes and where the warm start leaves the model.

For each task, builds ``tiny:<task>`` from scratch into a temporary directory (exactly what
``resolve_model`` does on first use) and measures:

* build wall time and CPU time (the build process's own, from ``os.times``), parameters;
* greedy accuracy (KV-cached ``generate``) on held-out problems (``split=test``: never in
  the warm start's data), the number the warm start aims at 50-65%;
* what RL sees at the start: the accuracy of sampled completions at temperature 1.0 and
  0.7 (8 per prompt), and the fraction of 8-sample groups with mixed rewards (the groups
  that give GRPO a non-zero advantage);
* the fraction of greedy completions in the ``<think>…</think>\\n<answer>…</answer>`` form.

    .venv/bin/python bench/tiny_models.py [--tasks arithmetic countdown] [--heldout 400]
                                          [--out bench/results/tiny_models.json]

Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_FORMAT_RE = re.compile(r"^<think>.+</think>\n<answer>.+</answer>$", re.DOTALL)


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def _measure(task: str, heldout: int, seed: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlvr.data import load_prompts, render_prompt
    from rlvr.models.tiny import _is_correct, build_tiny_model, greedy_completions

    with tempfile.TemporaryDirectory() as tmp:
        wall0, cpu0 = time.monotonic(), _cpu_s()
        path = build_tiny_model(task, Path(tmp) / task, seed=seed)
        build_wall, build_cpu = time.monotonic() - wall0, _cpu_s() - cpu0
        meta = json.loads((path / "rlvr_tiny.json").read_text())
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path).eval()
    torch.set_num_threads(1)
    # held-out problems from the distribution the model was warm-started on
    params = "".join(f"&{k}={v}" for k, v in meta["recipe"]["task_params"].items())
    source = f"builtin:{task}?n={heldout}&seed=7&split=test{params}"
    records = load_prompts(source)
    prompts = [render_prompt(tok, r, "think") for r in records]
    greedy = greedy_completions(model, tok, prompts)
    correct = [_is_correct(task, c, r.reference) for c, r in zip(greedy, records, strict=True)]
    row = {
        "task": task,
        "parameters": meta["report"]["parameters"],
        "build_wall_s": round(build_wall, 1),
        "build_cpu_s": round(build_cpu, 1),
        "warm_start_steps": meta["report"].get("warm_start", {}).get("steps"),
        "valid_accuracy": meta["report"].get("warm_start", {}).get("valid_accuracy"),
        "heldout_greedy_accuracy": sum(correct) / len(correct),
        "heldout_n": len(records),
        "heldout_source": source,
        "format_ok": sum(bool(_FORMAT_RE.match(c)) for c in greedy) / len(greedy),
    }
    torch.manual_seed(0)
    sample_records = records[:64]
    enc = tok(prompts[:64], return_tensors="pt", padding=True, padding_side="left")
    for temperature in (1.0, 0.7):
        with torch.no_grad():
            out = model.generate(
                **enc,
                do_sample=True,
                temperature=temperature,
                top_p=1.0,
                top_k=0,  # transformers' default top_k=50 would truncate what RL samples from
                max_new_tokens=64,
                num_return_sequences=8,
            )
        texts = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        ok = [_is_correct(task, t, sample_records[i // 8].reference) for i, t in enumerate(texts)]
        groups = [ok[i : i + 8] for i in range(0, len(ok), 8)]
        row[f"sample_accuracy_t{temperature}"] = sum(ok) / len(ok)
        row[f"mixed_groups_t{temperature}"] = sum(0 < sum(g) < 8 for g in groups) / len(groups)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=["arithmetic", "countdown"])
    ap.add_argument("--heldout", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "tiny_models.json"))
    args = ap.parse_args()
    rows = [_measure(task, args.heldout, args.seed) for task in args.tasks]
    cols = [
        ("task", "{}"), ("parameters", "{:,}"), ("build_wall_s", "{:.1f}"),
        ("build_cpu_s", "{:.1f}"), ("warm_start_steps", "{}"), ("valid_accuracy", "{:.1%}"),
        ("heldout_greedy_accuracy", "{:.1%}"), ("format_ok", "{:.1%}"),
        ("sample_accuracy_t1.0", "{:.1%}"), ("mixed_groups_t1.0", "{:.1%}"),
        ("sample_accuracy_t0.7", "{:.1%}"), ("mixed_groups_t0.7", "{:.1%}"),
    ]  # fmt: skip
    print(" | ".join(c for c, _ in cols))
    for r in rows:
        print(" | ".join(fmt.format(r[c]) if r[c] is not None else "-" for c, fmt in cols))
    result = {
        "bench": "tiny_models",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "loadavg_at_end": os.getloadavg(),
        },
        "command": " ".join(sys.argv),
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
