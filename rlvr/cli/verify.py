"""``rlvr verify``: score one completion with a verifier, or list the verifiers.

    rlvr verify --verifier math --completion '<think>…</think><answer>57</answer>' --reference 57
    rlvr verify --verifier countdown --completion-file out.txt --reference '{"numbers": [3, 4, 5], "target": 35}'
    rlvr verify --list [--json]

Prints the Verdict as JSON and exits 0 (whether or not it passed); exits 2 with a message
for bad input (unknown verifier, malformed reference or options). Imports neither torch
nor Ray. The verifier runs in a one-worker :class:`~verifiers.pool.VerifierPool`, so
``--timeout`` holds for every verifier, plugins included.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rlvr.cli import UsageError


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="score a completion against a reference with a verifier",
        description=__doc__.split("\n\n")[0],
        epilog="Verifiers and their reference formats: rlvr verify --list",
    )
    parser.add_argument("--verifier", "-v", help="verifier name (see --list)")
    parser.add_argument("--completion", "-c", help="the model's completion text")
    parser.add_argument("--completion-file", help="read the completion from a file ('-' = stdin)")
    parser.add_argument(
        "--reference",
        "-r",
        help="the reference: plain text (math: the gold answer) or JSON (countdown, code)",
    )
    parser.add_argument(
        "--options",
        default="{}",
        help="verifier options as a JSON object, e.g. '{\"strict\": false}'",
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds before giving up (default 30)"
    )
    parser.add_argument("--list", action="store_true", help="list the available verifiers")
    parser.add_argument("--json", action="store_true", help="with --list: print JSON")
    parser.set_defaults(func=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    from verifiers import list_verifiers

    if args.list:
        infos = list_verifiers()
        if args.json:
            print(json.dumps([info.__dict__ for info in infos], indent=2))
        else:
            for info in infos:
                print(f"{info.name}\n  {info.description}\n  reference: {info.reference_format}\n")
        return 0

    name, completion, options = _parse_inputs(args)
    reference = _parse_reference(name, options, args.reference)
    verdict = _run_in_pool(name, options, completion, reference, args.timeout)
    print(json.dumps(verdict.to_dict(), ensure_ascii=False))
    return 0


def _parse_inputs(args: argparse.Namespace) -> tuple[str, str, dict]:
    if not args.verifier:
        raise UsageError("--verifier is required (rlvr verify --list shows the verifiers)")
    if (args.completion is None) == (args.completion_file is None):
        raise UsageError("give exactly one of --completion TEXT or --completion-file PATH")
    if args.reference is None:
        raise UsageError(
            f"--reference is required (rlvr verify --list shows the format for {args.verifier!r})"
        )
    if not args.timeout > 0:
        raise UsageError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    completion = args.completion
    if args.completion_file is not None:
        try:
            if args.completion_file == "-":
                completion = sys.stdin.read()
            else:
                with open(args.completion_file, encoding="utf-8") as f:
                    completion = f.read()
        except OSError as exc:
            raise UsageError(
                f"--completion-file: cannot read {args.completion_file!r}: {exc.strerror}"
            ) from None
    try:
        options = json.loads(args.options)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"--options is not valid JSON ({exc.msg}); give an object like '{{}}'"
        ) from None
    if not isinstance(options, dict):
        raise UsageError("--options must be a JSON object, e.g. '{\"strict\": false}'")
    return args.verifier, completion, options


def _parse_reference(name: str, options: dict, text: str) -> Any:
    """The reference as the verifier wants it: the text itself if it accepts that
    (math: ``[1, 3]`` is an interval, not a JSON list), else the text read as JSON."""
    from verifiers import BadReferenceError, get_verifier
    from verifiers.registry import UnknownVerifierError

    try:
        verifier = get_verifier(name, **options)
    except UnknownVerifierError as exc:
        raise UsageError(str(exc)) from None
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--options for verifier {name!r}: {exc}") from None
    try:
        verifier.check_reference(text)
        return text
    except BadReferenceError as exc:
        first_error = exc
    try:
        decoded = json.loads(text)
    except json.JSONDecodeError:
        raise UsageError(
            f"--reference for verifier {name!r}: {first_error} "
            f"(expected {verifier.reference_format})"
        ) from None
    try:
        verifier.check_reference(decoded)
    except BadReferenceError as exc:
        raise UsageError(f"--reference for verifier {name!r}: {exc}") from None
    return decoded


def _run_in_pool(name: str, options: dict, completion: str, reference: Any, timeout: float):
    from verifiers import BadReferenceError, VerifierPool

    preload = ("verifiers.math",) if name == "math" else ()
    with VerifierPool(workers=1, timeout_s=timeout, preload=preload) as pool:
        try:
            return pool.verify_many([(name, options, completion, reference)])[0]
        except BadReferenceError as exc:
            raise UsageError(f"--reference for verifier {name!r}: {exc}") from None
