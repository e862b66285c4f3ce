"""Weight sync time, learner → vLLM engine, per method and model size.

A stand-in learner (``HfWeightHolder``: an HF model in bf16 on its GPU, in a Ray actor) pushes
its full state dict to one vLLM engine actor (``VllmEngine``) with
``rlvr.rollout.weight_sync.WeightSender``; the time is the learner's wall time from "weights
on my GPU" to "every engine has loaded them and reset its prefix cache". Before each sync the
learner changes its weights, and after the last one the engine's copy is checked against it.

- ``object_store``: pack into pinned host memory, one ``ray.put``, the engine reads the object
  zero-copy, copies it to its GPU and loads it (works across nodes and without GPUs).
- ``cuda_ipc``: learner and engine share the GPU (``num_gpus=0.5`` each); the engine loads
  straight from the learner's packed GPU buffer.
- ``nccl``: learner and engine on different GPUs (skipped with one GPU: NCCL cannot put two
  ranks on one device).

The engine runs with ``enforce_eager`` (it starts ~3x faster; loading writes the same
parameter memory either way).

    python bench/sync.py                               # 0.5B and 1.5B shapes, all methods
    python bench/sync.py --shapes qwen2.5-0.5b --methods cuda_ipc --repeats 10

Prints a table and writes JSON (``--out``, default ``bench/results/sync.json``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

METHODS = ("object_store", "cuda_ipc", "nccl")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from bench._gpu_models import SHAPES

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default="qwen2.5-0.5b,qwen2.5-1.5b")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--repeats", type=int, default=5, help="timed syncs per method (after 1 warmup)")
    p.add_argument("--timeout", type=float, default=300, help="seconds per sync")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "sync.json"))
    args = p.parse_args(argv)
    args.shape_list = [s for s in args.shapes.split(",") if s]
    args.method_list = [m for m in args.methods.split(",") if m]
    bad = [s for s in args.shape_list if s not in SHAPES]
    if bad or not args.shape_list:
        p.error(
            f"--shapes must be a comma-separated subset of {','.join(sorted(SHAPES))} (bad: {bad})"
        )
    bad = [m for m in args.method_list if m not in METHODS]
    if bad or not args.method_list:
        p.error(f"--methods must be a comma-separated subset of {','.join(METHODS)} (bad: {bad})")
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    return args


def _bench_shape(shape: str, args, gpus: int) -> list[dict]:
    import ray

    from bench._gpu_models import HfWeightHolder, build_model_dir
    from rlvr.rollout.vllm import VllmEngineConfig, VllmRollout

    model_dir = str(build_model_dir(shape, tempfile.mkdtemp(prefix=f"rlvr-sync-{shape}-")))
    import torch

    torch.cuda.empty_cache()
    rows = []
    # object_store and cuda_ipc share one engine + learner pair on GPU 0; nccl gets a pair on
    # two GPUs.
    groups = [
        [m for m in args.method_list if m != "nccl"],
        [m for m in args.method_list if m == "nccl"],
    ]
    for methods in groups:
        if not methods:
            continue
        share = methods != ["nccl"]
        if not share and gpus < 2:
            rows.append({"shape": shape, "method": "nccl", "skipped": f"needs 2 GPUs, have {gpus}"})
            continue
        rollout = VllmRollout(
            VllmEngineConfig(
                model=model_dir,
                enforce_eager=True,
                gpu_memory_utilization=0.25,
                kv_cache_memory_bytes=1 << 30,
                max_model_len=1024,
            ),
            replicas=1,
            num_gpus=0.5 if share else 1.0,
            num_cpus=1,
        )
        holder = ray.remote(num_gpus=0.5 if share else 1.0, num_cpus=1)(HfWeightHolder).remote(
            model_dir
        )
        version = 0
        try:
            for method in methods:
                runs = []
                for i in range(args.repeats + 1):  # the first is a warmup
                    version += 1
                    ray.get(holder.perturb.remote(1.01), timeout=60)
                    stats = ray.get(
                        holder.push.remote(rollout.replicas.engines, method, version, args.timeout),
                        timeout=args.timeout + 60,
                    )
                    if i > 0:
                        runs.append(stats)
                rows.append(_row(shape, runs, holder, rollout))
        finally:
            ray.kill(holder)
            rollout.shutdown()
            time.sleep(2)  # let the GPU memory of the killed actors go
    return rows


def _row(shape: str, runs: list[dict], holder, rollout) -> dict:
    import ray

    want = ray.get(holder.param_sum.remote("model.norm.weight"), timeout=60)
    got = ray.get(rollout.replicas.engines[0].param_sum.remote("model.norm.weight"), timeout=60)
    row = {
        "shape": shape,
        "method": runs[0]["method"],
        "bytes": runs[0]["bytes"],
        "repeats": len(runs),
        "median_s": statistics.median(r["total_s"] for r in runs),
        "min_s": min(r["total_s"] for r in runs),
        "max_s": max(r["total_s"] for r in runs),
        "weights_match": abs(got - want) <= 1e-3 * abs(want) + 1e-2,
    }
    for part in ("pack_s", "put_s", "load_s"):
        if part in runs[0]:
            row[f"median_{part}"] = statistics.median(r[part] for r in runs)
    print(
        f"[sync] {shape} {row['method']}: median {row['median_s']:.3f} s, "
        f"weights match: {row['weights_match']}",
        flush=True,
    )
    return row


def _table(rows: list[dict]) -> str:
    lines = [
        f"{'shape':<14} {'method':<13} {'GB':>6} {'median s':>9} {'min s':>7} {'max s':>7} {'match':>6}"
    ]
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['shape']:<14} {r['method']:<13} skipped: {r['skipped']}")
            continue
        lines.append(
            f"{r['shape']:<14} {r['method']:<13} {r['bytes'] / 1e9:>6.2f} {r['median_s']:>9.3f} "
            f"{r['min_s']:>7.3f} {r['max_s']:>7.3f} {str(r['weights_match']):>6}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available() or importlib.util.find_spec("vllm") is None:
        print("bench/sync.py needs a CUDA GPU and vLLM (see docs/gpu.md)", file=sys.stderr)
        return 2
    import ray

    ray.init(include_dashboard=False, log_to_driver=False)
    gpus = torch.cuda.device_count()
    rows = []
    for shape in args.shape_list:
        rows += _bench_shape(shape, args, gpus)
    print(_table(rows))
    report = {
        "bench": "sync",
        "date": dt.date.today().isoformat(),
        "device": f"{gpus} x {torch.cuda.get_device_name(0)}",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "results": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"[sync] wrote {out}")
    ray.shutdown()
    return 0 if all(r.get("weights_match", True) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
