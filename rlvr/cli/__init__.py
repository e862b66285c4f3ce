"""``rlvr`` command line. Each group of subcommands lives in its own module, which defines

    add_parsers(subparsers) -> None   # declares its subcommands; each sets func=run_xxx
    run_xxx(args) -> int              # does the work; returns the exit code

Modules are imported lazily so ``rlvr verify`` never pays for importing torch or Ray.
Exit codes: 0 ok, 1 the work failed, 2 bad input (argparse's own convention).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module under rlvr.cli
_COMMANDS: dict[str, str] = {
    "verify": "verify",
    "train": "train",
    "eval": "eval",
    "plan": "plan",
    "serve": "service",
    "submit": "service",
    "jobs": "service",
    "status": "service",
    "cancel": "service",
    "resume": "service",
    "demo": "service",
    "models": "models",
    "export": "export",
}


class UsageError(Exception):
    """Bad input found after parsing (unknown verifier, malformed file...): exit code 2."""


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlvr", description="Reinforcement learning from verifiable rewards."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in dict.fromkeys(_COMMANDS.values()):
        importlib.import_module(f"rlvr.cli.{module_name}").add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"rlvr {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
