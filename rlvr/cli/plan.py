"""``rlvr plan``: where a job's engines and learners would run, and whether they fit.

    rlvr plan examples/arithmetic.yaml                           # the local machine's resources
    rlvr plan spec.yaml --gpus 8 --gpu-memory-gb 80 --nodes 2    # a cluster you describe
    rlvr plan spec.yaml --ray-address auto --json                # a running Ray cluster

Prints the layout (cpu, colocate or split), the weight sync, every actor with its node, GPUs
and GPU share, and the memory estimate of each GPU (weights, gradients, optimizer state,
activations, vLLM KV cache). Starts nothing. Exit codes: 0 the job fits, 1 it does not (the
lines say which field to change), 2 bad input.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

from rlvr.cli import UsageError


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="show where a job's actors would run and their memory, without running it",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    parser.add_argument("spec", help="the job spec (YAML or JSON)")
    parser.add_argument("--gpus", type=int, help="GPUs in the cluster (default: read from Ray)")
    parser.add_argument("--gpu-memory-gb", type=float, help="memory of each GPU (default: 80)")
    parser.add_argument("--nodes", type=int, default=1, help="nodes the GPUs are spread over")
    parser.add_argument(
        "--ray-address", help="read the resources of this running Ray cluster (or $RAY_ADDRESS)"
    )
    parser.add_argument("--json", action="store_true", help="the plan as JSON")
    parser.set_defaults(func=run_plan)


def _local_gpus() -> tuple[int, float | None]:
    """(GPUs, GB each) of this machine from nvidia-smi; never initialises CUDA."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0, None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout.split()  # fmt: skip
        return len(out), min(float(x) for x in out) * 2**20 / 1e9 if out else None
    except (OSError, ValueError, subprocess.SubprocessError):
        return 0, None


def _cluster(args: argparse.Namespace):
    """Given GPUs; else a running Ray cluster (--ray-address, $RAY_ADDRESS); else this machine."""
    from rlvr.plan import cluster_from_args, cluster_from_ray

    address = args.ray_address or os.environ.get("RAY_ADDRESS")
    if args.gpus is not None or not address:
        gpus, memory_gb = (
            (args.gpus, args.gpu_memory_gb) if args.gpus is not None else _local_gpus()
        )
        try:
            return cluster_from_args(gpus, args.gpu_memory_gb or memory_gb, args.nodes)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    import ray

    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    try:
        return cluster_from_ray(args.gpu_memory_gb)
    finally:
        ray.shutdown()


def run_plan(args: argparse.Namespace) -> int:
    from rlvr.cli.train import load_spec
    from rlvr.plan import make_plan, plan_summary

    spec = load_spec(args.spec)
    plan = make_plan(spec, _cluster(args))
    print(plan.to_json() if args.json else plan_summary(plan))
    if not plan.fits and not args.json:
        print("rlvr plan: the job does not fit; change the fields named above", file=sys.stderr)
    return 0 if plan.fits else 1
