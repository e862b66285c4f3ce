"""``rlvr eval``: evaluate a model, a checkpoint, or every checkpoint of a run, no training.

    rlvr eval tiny:arithmetic --data "builtin:arithmetic?n=200&seed=1&split=test"
    rlvr eval runs/arith/checkpoints/step_100 --data builtin:humaneval --samples 8 --k 1,8
    rlvr eval runs/arith --json          # every checkpoint, on the run's own eval sets

Metrics per set: pass@1, pass@k (unbiased), maj@k, mean length (docs/evaluation.md). A run
directory gives one row per checkpoint (and its base model at step 0): an eval-vs-step
curve. Rollout and reward settings come from --spec, else the run's spec.json, else the
defaults. One HF engine (the CPU default) runs in this process, with no Ray cluster; a
``--ray-address`` / ``$RAY_ADDRESS``, several replicas or vLLM use engine actors on a cluster.
Bad input exits 2 naming the option; a failed evaluation exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from rlvr.cli import UsageError


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a model, checkpoint or run (pass@k, maj@k)",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    parser.add_argument(
        "target", metavar="MODEL_OR_CHECKPOINT", help="model, checkpoint or run dir"
    )
    parser.add_argument(
        "--data", action="append", default=[], metavar="SRC", help="an eval set (repeatable)"
    )
    parser.add_argument("--samples", type=int, default=1, help="completions per prompt (1: greedy)")
    parser.add_argument("--k", default="1,8", help="comma-separated k for pass@k and maj@k")
    parser.add_argument("--temperature", type=float, default=1.0, help="when --samples > 1")
    parser.add_argument("--max-new-tokens", type=int, help="default: the spec's rollout's")
    parser.add_argument("--spec", help="a job spec for rollout, reward and prompt settings")
    parser.add_argument(
        "--ray-address",
        help="Ray cluster to join (default: none for one HF engine, else a local one)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(func=run_eval)


def _parse_k(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--k: expected comma-separated integers like 1,8, got {text!r}") from None


def build_spec(args: argparse.Namespace) -> tuple[Any, list[Any]]:
    """(the eval-only job spec, the models to evaluate); :class:`UsageError` naming the flag."""
    from pydantic import ValidationError

    from rlvr.cli.train import load_spec
    from rlvr.config import JobSpec
    from rlvr.train.evaluate import eval_spec, eval_targets

    targets = eval_targets(args.target)
    base = None
    if args.spec:
        base = load_spec(args.spec)
    else:
        run_spec = Path(args.target).expanduser() / "spec.json"
        for candidate in (run_spec, Path(args.target).expanduser().parent.parent / "spec.json"):
            if candidate.is_file():
                base = JobSpec.model_validate_json(candidate.read_text())
                break
    if not args.data and not (base and (base.eval.sets or base.data.eval)):
        raise UsageError("--data: give at least one eval set (e.g. --data builtin:humaneval)")
    try:
        spec = eval_spec(
            args.data,
            base,
            samples=args.samples,
            k=_parse_k(args.k),
            temperature=args.temperature,
            max_new_tokens=args.max_new_tokens,
        )
    except ValidationError as exc:
        flags = {"samples": "--samples", "k": "--k", "temperature": "--temperature"}
        err = exc.errors()[0]
        loc = [str(p) for p in err.get("loc", ())]
        flag = next((flags[p] for p in loc if p in flags), ".".join(loc) or "--data")
        raise UsageError(f"{flag}: {err.get('msg', 'invalid')}") from None
    return spec, targets


def _check_sources(spec: Any) -> None:
    from rlvr.data import DataError, validate_source
    from rlvr.train.evaluate import eval_sets

    names = [v.name for v in spec.reward.verifiers[:1]]
    for src in eval_sets(spec).values():
        try:
            validate_source(src, verifiers=names)
        except DataError as exc:
            raise UsageError(f"--data: {exc}") from None


def run_eval(args: argparse.Namespace) -> int:
    spec, targets = build_spec(args)
    _check_sources(spec)
    from rlvr.rollout import resolve_engine
    from rlvr.rollout._common import running_ray
    from rlvr.train.evaluate import eval_sets, evaluate_model

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = args.ray_address or os.environ.get("RAY_ADDRESS")
    connected = running_ray() is not None
    # One HF engine needs no cluster: it runs in this process, as a CPU training run's does
    # (a Ray start is ~5 s and ~0.6 GB of daemons here). A cluster to join, one already
    # connected, several replicas or vLLM keep the engine actors.
    in_process = (
        not address
        and not connected
        and spec.rollout.replicas == 1
        and spec.rollout.engine in ("auto", "hf")
        and resolve_engine(spec.rollout.engine) == "hf"
    )
    started = None
    if not in_process and not connected:
        import ray

        kwargs: dict = {"address": address} if address else {"include_dashboard": False}
        ray.init(log_to_driver=False, **kwargs)
        started = ray
    results = []
    try:
        for i, target in enumerate(targets):

            def progress(name: str, j: int, n: int, i: int = i, label: str = target.label) -> None:
                print(f"[{i + 1}/{len(targets)}] {label}: {name} ({j + 1}/{n})", file=sys.stderr)

            try:
                metrics, _ = evaluate_model(
                    spec, target.model, progress=progress, in_process=in_process
                )
            except Exception as exc:
                print(f"rlvr eval: {target.label}: {type(exc).__name__}: {exc}", file=sys.stderr)
                return 1
            results.append({"model": target.label, "step": target.step, "metrics": metrics})
    finally:
        if started is not None:
            started.shutdown()
    if args.json:
        print(json.dumps({"sets": eval_sets(spec), "results": results}, indent=1))
    else:
        print(format_table(results))
    return 0


def format_table(results: list[dict]) -> str:
    """One row per model, one column per eval metric (``eval/`` dropped)."""
    names = [
        k for k in dict.fromkeys(k for r in results for k in r["metrics"]) if k.startswith("eval/")
    ]
    header = ["model", *[n.removeprefix("eval/") for n in names]]
    rows = [
        [r["model"], *[f"{r['metrics'].get(n, float('nan')):.3f}" for n in names]] for r in results
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    return "\n".join(
        "  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True))
        for row in [header, *rows]
    )
