"""``rlvr export``: a run's checkpoint as a directory transformers and vLLM load.

    rlvr export runs/arith --out models/arith-rl                 # the newest checkpoint
    rlvr export runs/arith --step 100 --out models/arith-rl-100
    rlvr export arith-1a2b3c --out models/arith-rl               # a service job's id
    rlvr export runs/lora-run --adapter --out models/lora-adapter

The directory holds the model (a LoRA run's adapters merged in) or, with ``--adapter``,
the peft adapter alone, plus the tokenizer and a README.md model card (base model, data,
algorithm, eval results). A job id is looked up in the service's job store
(``--db`` or $RLVR_DB_URL) for the run directory it recorded.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rlvr.cli import UsageError


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write a checkpoint as a Hugging Face model directory (+ model card)",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    parser.add_argument("run", metavar="RUN_DIR_OR_JOB_ID", help="a run directory or a job id")
    parser.add_argument("--step", type=int, default=None, help="default: the newest checkpoint")
    parser.add_argument("--out", required=True, help="the directory to write (new or empty)")
    parser.add_argument(
        "--adapter", action="store_true", help="the LoRA adapter alone (LoRA runs only)"
    )
    parser.add_argument("--db", default=None, help="job store for a job id (default $RLVR_DB_URL)")
    parser.set_defaults(func=run_export)


def _run_dir(value: str, db: str | None) -> Path:
    """A run directory as given, else the one the job store recorded for job ``value``."""
    path = Path(value).expanduser()
    if path.is_dir():
        return path
    from rlvr.api.settings import Settings
    from rlvr.jobs.store import JobStore

    url = Settings.from_env(db_url=db).db_url
    if "://" not in url:
        url = f"sqlite:///{Path(url).expanduser()}"
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).is_file():
        raise UsageError(f"{value}: not a run directory, and there is no job store at {url}")
    job = JobStore(url).get_job(value)
    if job is None:
        raise UsageError(f"{value}: not a run directory, nor a job id in the job store {url}")
    return Path(job.run_dir)


def run_export(args: argparse.Namespace) -> int:
    from rlvr.export import ExportError, export_checkpoint

    run = _run_dir(args.run, args.db)
    try:
        plan = export_checkpoint(run, Path(args.out).expanduser(), args.step, args.adapter)
    except ExportError as exc:
        raise UsageError(str(exc)) from None
    what = "adapter" if plan.adapter else "model"
    print(f"exported the {what} of step {plan.step} of {run} ({len(plan.files) + 1} files)")
    print(args.out)
    return 0
