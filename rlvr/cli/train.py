"""``rlvr train``: run a training job on a Ray cluster from a YAML/JSON spec.

    rlvr train examples/arithmetic.yaml
    rlvr train examples/arithmetic.yaml --resume              # continue from the last checkpoint
    rlvr train spec.yaml --ray-address auto --run-dir runs/x  # join a running cluster

Prints a live progress line (step, reward, accuracy, eval accuracy, tokens/s) and a final
summary; writes metrics.jsonl, samples.jsonl, checkpoints/ and curves.png into the run
directory (default ``runs/<spec name>``). A bad spec exits 2 naming the field (also one that
validates but cannot run as written, found as the run starts: its plan on the cluster, its
model, its data: :class:`~rlvr.config.SpecError`); a failed run exits 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from rlvr.cli import UsageError


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="run a training job from a spec file",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    parser.add_argument("spec", help="the job spec (YAML or JSON); see examples/")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the run dir's newest checkpoint"
    )
    parser.add_argument(
        "--ray-address", help="Ray cluster to join (default: $RAY_ADDRESS, else a local one)"
    )
    parser.add_argument("--run-dir", help="where the run's files go (default: runs/<spec name>)")
    parser.add_argument("--max-steps", type=int, help="override algorithm.max_steps")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.set_defaults(func=run_train)


def _format_validation_error(exc: Any) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ())) or "(spec)"
        lines.append(f"  {loc}: {err.get('msg', 'invalid')}")
    return "invalid job spec:\n" + "\n".join(lines)


def load_spec(path: str, max_steps: int | None = None) -> Any:
    """The validated JobSpec of ``path``; :class:`UsageError` naming the field otherwise."""
    import yaml
    from pydantic import ValidationError

    from rlvr.config import JobSpec

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"no spec file {path!r}")
    try:
        spec = JobSpec.from_file(p)
        if max_steps is not None:
            spec.algorithm.max_steps = max_steps
    except ValidationError as exc:
        raise UsageError(_format_validation_error(exc)) from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path} is not valid YAML/JSON: {exc}") from None
    except ValueError as exc:
        raise UsageError(f"{path}: {exc}") from None
    return spec


def _precheck(spec: Any) -> None:
    """Cheap checks before starting Ray: data sources (every row) and verifier names."""
    from rlvr.data import DataError, validate_source
    from verifiers import get_verifier

    for i, v in enumerate(spec.reward.verifiers):
        try:
            get_verifier(v.name, **v.options)
        except Exception as exc:
            raise UsageError(f"reward.verifiers[{i}].name: {exc}") from None
    names = [v.name for v in spec.reward.verifiers[:1]]
    sources = [("data.train", spec.data.train), ("data.eval", spec.data.eval)]
    sources += [(f"eval.sets.{name}", src) for name, src in spec.eval.sets.items()]
    for field_name, source in sources:
        if source is None:
            continue
        try:
            validate_source(source, verifiers=names)
        except DataError as exc:
            raise UsageError(f"{field_name}: {exc}") from None
    model = spec.model.path
    from rlvr.models.importer import KNOWN_MODELS
    from rlvr.models.resolve import imported_model_dir_name

    if model in KNOWN_MODELS:  # imported on first use: its package must be here
        try:
            imported_model_dir_name(model)
        except LookupError as exc:
            raise UsageError(f"model.path: {exc}") from None
    looks_local = model.startswith(("/", ".", "~"))  # "org/name" is a hub id
    if looks_local and not Path(model).expanduser().is_dir():
        raise UsageError(
            f"model.path: {model!r} is not a directory (use tiny:<task>, an HF id or a model directory)"
        )


class _Progress:
    """One live line: step, reward, accuracy, eval accuracy, tokens/s, time per step, ETA."""

    def __init__(self, max_steps: int, quiet: bool):
        self.max_steps = max_steps
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.t0 = time.monotonic()
        self.first_step: int | None = None
        self.eval: float | None = None

    def __call__(self, step: int, m: dict[str, float]) -> None:
        if "eval/accuracy" in m:
            self.eval = m["eval/accuracy"]
        if self.quiet:
            return
        if step == 0:
            print(f"step 0: eval accuracy {self.eval:.1%} (before training)", file=sys.stderr)
            self.t0 = time.monotonic()
            return
        if self.first_step is None:
            self.first_step = step
            self.t0 = time.monotonic() - m.get("time/step_s", 0.0)
        done = step - self.first_step + 1
        per_step = (time.monotonic() - self.t0) / done
        eta = per_step * (self.max_steps - step)
        width = 20
        filled = int(width * step / self.max_steps)
        bar = "#" * filled + "." * (width - filled)
        ev = f" | eval {self.eval:.1%}" if self.eval is not None else ""
        line = (
            f"[{bar}] step {step}/{self.max_steps} | reward {m['reward/mean']:.3f} | "
            f"acc {m['accuracy']:.1%}{ev} | {m['throughput/rollout_tok_s']:.0f} tok/s | "
            f"{per_step:.1f} s/step | ETA {eta / 60:.1f} min"
        )
        if self.tty:
            print(
                "\r" + line + "\033[K",
                end="" if step < self.max_steps else "\n",
                file=sys.stderr,
                flush=True,
            )
        else:
            print(line, file=sys.stderr, flush=True)


def run_train(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec, args.max_steps)
    _precheck(spec)
    run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / spec.name
    if not args.resume and (
        (run_dir / "metrics.jsonl").exists() or (run_dir / "checkpoints").exists()
    ):
        raise UsageError(f"{run_dir} already holds a run: add --resume, or pass another --run-dir")

    from rlvr.config import SpecError
    from rlvr.train import run

    progress = _Progress(spec.algorithm.max_steps, args.quiet)
    print(f"rlvr train: {spec.name} -> {run_dir}", file=sys.stderr)
    try:
        summary = run(
            spec, run_dir, resume=args.resume, ray_address=args.ray_address, progress=progress
        )
    except KeyboardInterrupt:
        raise
    except SpecError as exc:  # found at the start (the plan on this cluster, model, data)
        raise UsageError(str(exc)) from None
    except Exception as exc:
        print(f"\nrlvr train: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    before = summary.initial_eval_accuracy
    after = summary.final_eval_accuracy
    print(
        f"\n{summary.status}: {summary.step}/{summary.max_steps} steps in {summary.wall_s / 60:.1f} min"
    )
    if before is not None and after is not None:
        print(f"eval accuracy: {before:.1%} -> {after:.1%} ({(after - before) * 100:+.1f} points)")
    print(f"run dir: {run_dir}  (metrics.jsonl, samples.jsonl, curves.png)")
    if summary.checkpoint:
        print(f"last checkpoint: {summary.checkpoint}")
    return 0
