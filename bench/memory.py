"""The largest Qwen2.5 model that trains on N GPUs of M GB, by the placement plan's memory model.

For every GPU count (1, 2, 4, 8) and GPU size (24, 40, 80, 141 GB) and three ways to train:

* ``full``: full fine-tuning, every learner holding fp32 weights, gradients and AdamW state;
* ``lora``: LoRA adapters (rank 16 on q/k/v/o) on a bf16 base;
* ``fsdp``: full fine-tuning with the learner state sharded over the learners;

it tries the layouts a job could ask for (colocate: ``replicas x tensor_parallel_size``
engines over all GPUs at ``gpu_memory_utilization`` 0.3 beside the learners; split: one
engine of 1..N/2 GPUs at 0.9, learners on the rest) and reports the largest model of the
Qwen2.5 family (0.5B .. 72B, shapes in ``rlvr.plan.memory.QWEN25``) for which one of them
fits, with that layout. The workload: prompts of 512 tokens, 1024 new tokens, micro-batches
of 4096 tokens, gradient checkpointing on, no KL reference. An estimate, not a measurement
(docs/gpu.md: what the model counts); no GPU needed.

    .venv/bin/python bench/memory.py            # table + bench/results/memory.json
    .venv/bin/python bench/memory.py --json     # the JSON only
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

from rlvr.config import JobSpec
from rlvr.plan import cluster_from_args, make_plan
from rlvr.plan.memory import QWEN25, param_count

GPU_COUNTS = (1, 2, 4, 8)
GPU_SIZES_GB = (24, 40, 80, 141)
MODES = ("full", "lora", "fsdp")
WORKLOAD = {
    "data": {"max_prompt_tokens": 512},
    "rollout": {"max_new_tokens": 1024},
    "algorithm": {"micro_batch_tokens": 4096, "prompts_per_step": 64, "group_size": 8},
}
OUT = Path(__file__).parent / "results" / "memory.json"


def _layouts(gpus: int, mode: str) -> list[dict]:
    """Spec overrides for every layout worth trying on ``gpus`` GPUs."""
    out = []
    for tp in (t for t in (1, 2, 4, 8) if t <= gpus):
        learners = gpus if mode == "fsdp" else 1
        out.append({
            "placement": {"mode": "colocate"},
            "rollout": {"replicas": gpus // tp, "tensor_parallel_size": tp,
                        "gpu_memory_utilization": 0.3},
            "algorithm": {"num_learners": learners},
        })  # fmt: skip
        if tp <= gpus // 2:  # split: at least as many learner GPUs as engine GPUs
            out.append({
                "placement": {"mode": "split"},
                "rollout": {"replicas": 1, "tensor_parallel_size": tp,
                            "gpu_memory_utilization": 0.9},
                "algorithm": {"num_learners": gpus - tp if mode == "fsdp" else 1},
            })  # fmt: skip
    return out


def _spec(model: str, mode: str, layout: dict) -> JobSpec:
    data = {"model": {"path": f"Qwen/{model}", "gradient_checkpointing": True}}
    if mode == "lora":
        data["model"]["lora"] = {"rank": 16}
    for section in ("data", "rollout", "algorithm", "placement"):
        merged = {**WORKLOAD.get(section, {}), **layout.get(section, {})}
        if merged:
            data[section] = merged
    return JobSpec.model_validate(data)


def largest_fit(gpus: int, size_gb: float, mode: str) -> dict | None:
    """The largest model that fits, with its layout and its busiest GPU's use."""
    cluster = cluster_from_args(gpus, size_gb)
    best = None
    for model in sorted(QWEN25, key=lambda m: param_count(QWEN25[m])):
        for layout in _layouts(gpus, mode):
            plan = make_plan(_spec(model, mode, layout), cluster,
                             sharding="fsdp" if mode == "fsdp" else None)  # fmt: skip
            if plan.fits:
                peak = max(g["used_bytes"] / g["capacity_bytes"] for g in plan.gpus)
                best = {
                    "model": model,
                    "params_b": round(param_count(QWEN25[model]) / 1e9, 2),
                    "layout": plan.mode,
                    "engine_gpus": layout["rollout"]["replicas"]
                    * layout["rollout"]["tensor_parallel_size"],
                    "tensor_parallel_size": layout["rollout"]["tensor_parallel_size"],
                    "learners": plan.num_learners,
                    "peak_gpu_use": round(peak, 3),
                }
                break
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the JSON only")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    rows = [
        {"gpus": g, "gpu_gb": m, **{mode: largest_fit(g, m, mode) for mode in MODES}}
        for g in GPU_COUNTS
        for m in GPU_SIZES_GB
    ]
    result = {
        "date": datetime.date.today().isoformat(),
        "workload": WORKLOAD | {"gradient_checkpointing": True, "lora_rank": 16},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    if args.json:
        print(json.dumps(result, indent=1, sort_keys=True))
        return 0

    def cell(fit: dict | None) -> str:
        if fit is None:
            return "none"
        name = fit["model"].removeprefix("Qwen2.5-")
        return f"{name} ({fit['layout']}, {fit['engine_gpus']}E/{fit['learners']}L)"

    print(f"{'GPUs':>4} {'GB':>4}  " + "  ".join(f"{m:<26}" for m in MODES))
    for r in rows:
        print(f"{r['gpus']:>4} {r['gpu_gb']:>4}  " + "  ".join(f"{cell(r[m]):<26}" for m in MODES))
    print(f"(E: engine GPUs, L: learners) -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
