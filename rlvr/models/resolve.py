"""Turning ``model.path`` into a local Hugging Face model directory.

Four kinds of path, tried in this order:

* ``tiny:<task>`` (optionally ``tiny:<task>?size=gpu&seed=1&warm_start=0``): built here by
  :mod:`rlvr.models.tiny` the first time, then reused from the cache;
* a pretrained model imported from a GGUF file that an installed package ships
  (``smollm2-135m-instruct``, :mod:`rlvr.models.importer`): imported the first time,
  then reused from the cache;
* a directory (absolute, relative to the working directory, or under one of the model
  roots ``RLVR_MODEL_ROOTS``) that holds ``config.json``;
* a Hugging Face id (``Qwen/Qwen2.5-0.5B-Instruct``): the local HF cache first, else
  downloaded from the Hub when it is reachable (:mod:`rlvr.hub`; no Hub: an error in seconds
  naming the local-directory alternative).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rlvr.models.importer import KNOWN_MODELS

TINY_PREFIX = "tiny:"
LOCK_TIMEOUT_S = 30 * 60  # how long to wait for another process building the same model
_HF_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class ModelNotFoundError(LookupError):
    """``model.path`` names nothing usable here; the message says what was tried and why."""


def _home() -> Path:
    return Path(os.environ.get("RLVR_HOME", "~/.rlvr")).expanduser()


def model_roots() -> list[Path]:
    """``RLVR_MODEL_ROOTS`` (os.pathsep-separated), else ``$RLVR_HOME/models``."""
    raw = os.environ.get("RLVR_MODEL_ROOTS", "")
    roots = [Path(p).expanduser() for p in raw.split(os.pathsep) if p]
    return roots or [_home() / "models"]


def default_cache_dir() -> Path:
    """Where ``tiny:`` models are built: the first model root."""
    return model_roots()[0]


# -- tiny: ------------------------------------------------------------------------------------
def _parse_tiny(spec: str):
    from rlvr.models import tiny

    body = spec[len(TINY_PREFIX) :]
    task, _, query = body.partition("?")
    kw: dict[str, Any] = {}
    for pair in filter(None, query.split("&")):
        key, _, value = pair.partition("=")
        if key == "size":
            kw["size"] = value
        elif key == "seed":
            if not re.fullmatch(r"-?\d+", value):
                raise ModelNotFoundError(f"{spec}: seed must be an integer, got {value!r}")
            kw["seed"] = int(value)
        elif key == "warm_start":
            if value not in ("0", "1", "true", "false"):
                raise ModelNotFoundError(f"{spec}: warm_start must be 0/1 or true/false")
            kw["warm_start"] = value in ("1", "true")
        else:
            raise ModelNotFoundError(
                f"{spec}: unknown parameter {key!r}; tiny models take size, seed, warm_start"
            )
    if task not in (*tiny.TASKS, "tools"):
        known = ", ".join((*tiny.TASKS, "tools"))
        raise ModelNotFoundError(f"{spec}: unknown tiny model task {task!r}; known: {known}")
    try:
        if task == "tools":  # its own builder (rlvr/models/tiny_tools.py)
            from rlvr.models import tiny_tools

            return tiny_tools.default_recipe(**kw)
        return tiny.default_recipe(task, **kw)
    except ValueError as exc:
        raise ModelNotFoundError(f"{spec}: {exc}") from None


def _code_fingerprint() -> str:
    """Hash of the sources that decide what a build produces: an edit invalidates the cache."""
    import rlvr.data.arithmetic
    import rlvr.data.countdown
    import rlvr.data.records
    import rlvr.data.templates
    import rlvr.models.tiny

    h = hashlib.sha256()
    for mod in (rlvr.models.tiny, rlvr.data.arithmetic, rlvr.data.countdown, rlvr.data.records,
                rlvr.data.templates):  # fmt: skip
        h.update(Path(str(mod.__file__)).read_bytes())
    return h.hexdigest()


def _tools_fingerprint() -> str:
    """``tiny:tools``'s builder and the protocol it writes; added to the shared fingerprint
    so that the other tiny models' cache keys stay what they were."""
    import rlvr.models.tiny_tools
    import rlvr.tools.calculator
    import rlvr.tools.protocol

    h = hashlib.sha256()
    for mod in (rlvr.models.tiny_tools, rlvr.tools.protocol, rlvr.tools.calculator):
        h.update(Path(str(mod.__file__)).read_bytes())
    return h.hexdigest()


def tiny_model_dir_name(spec: str) -> str:
    """The cache directory name of a ``tiny:`` spec: task, size, seed and the recipe's hash."""
    recipe = _parse_tiny(spec)
    blob = json.dumps(asdict(recipe), sort_keys=True) + _code_fingerprint()
    if recipe.task == "tools":
        blob += _tools_fingerprint()
    key = hashlib.sha256(blob.encode()).hexdigest()[:12]
    ws = "" if recipe.warm_start else "-random"
    return f"tiny-{recipe.task}-{recipe.size}-s{recipe.seed}{ws}-{key}"


def _lock(path: Path, what: str):
    """An exclusive flock on ``path``, waiting (with a bound) while another process holds it."""
    fh = open(path, "a+")  # noqa: SIM115 - held until released by the caller
    deadline = time.monotonic() + LOCK_TIMEOUT_S
    told = False
    while True:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fh
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                fh.close()
                raise
        if not told:
            print(f"[rlvr.models] waiting for another process building {what}", file=sys.stderr)
            told = True
        if time.monotonic() > deadline:
            fh.close()
            raise TimeoutError(f"gave up after {LOCK_TIMEOUT_S}s waiting for the lock {path}")
        time.sleep(0.5)


def _build_cached(spec: str, final: Path, build: Callable[[Path], object]) -> Path:
    """``final`` if it holds a model, else ``build(tmp)`` renamed to ``final`` under a lock."""
    if (final / "config.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    fh = _lock(final.parent / f".{final.name}.lock", spec)
    try:
        if (final / "config.json").is_file():  # built by the process we waited for
            return final
        tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            build(tmp)
            os.rename(tmp, final)  # atomic: readers see a complete directory or none
            print(f"[rlvr.models] {spec} is at {final}", file=sys.stderr, flush=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final
    finally:
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


def _resolve_tiny(spec: str, cache_dir: Path) -> Path:
    from rlvr.models import tiny

    recipe = _parse_tiny(spec)
    final = cache_dir / tiny_model_dir_name(spec)
    if recipe.task == "tools":
        from rlvr.models import tiny_tools

        return _build_cached(spec, final, lambda tmp: tiny_tools.build_from_recipe(recipe, tmp))
    return _build_cached(spec, final, lambda tmp: tiny.build_from_recipe(recipe, tmp))


# -- imported pretrained models (smollm2-135m-instruct) ----------------------------------------
def imported_model_dir_name(name: str) -> str:
    """The cache directory of a known imported model; :class:`ModelNotFoundError` naming the
    package to install when its GGUF file is not here."""
    from rlvr.models import importer

    try:
        return f"{name}-{importer.cache_key(name)}"
    except importer.ImportSourceError as exc:
        raise ModelNotFoundError(str(exc)) from None


def _resolve_imported(name: str, cache_dir: Path) -> Path:
    from rlvr.models import importer

    final = cache_dir / imported_model_dir_name(name)
    return _build_cached(name, final, lambda tmp: importer.import_gguf(name, tmp))


# -- directories and HF ids ---------------------------------------------------------------------
def _from_hf_cache(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached, invalid id, hub lib missing: all "not here"
        return None
    return path if (path / "config.json").is_file() else None


def _from_hub(repo_id: str) -> Path:
    """``repo_id`` downloaded from the Hub (fails in seconds when no Hub answers)."""
    from rlvr import hub

    try:
        path = Path(hub.download_model(repo_id))
    except hub.HubUnreachableError as exc:
        raise ModelNotFoundError(str(exc)) from None
    except Exception as exc:  # not found, gated, invalid id: the Hub's own message
        raise ModelNotFoundError(
            f"{repo_id!r}: the Hugging Face Hub could not provide it: {exc}"
        ) from None
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(f"{repo_id!r} on the Hugging Face Hub has no config.json")
    return path


def resolve_model(path_spec: str, *, cache_dir: str | Path | None = None) -> Path:
    """A local HF model directory for ``path_spec`` (built, looked up, or downloaded).

    Args:
        path_spec: ``tiny:<task>[?size=cpu|gpu&seed=N&warm_start=0|1]``, an imported
            model's name (``smollm2-135m-instruct``, needs ``rlvr[models]``), a directory
            holding ``config.json``, a name under one of the model roots, or an HF id
            (the local Hugging Face cache, else the Hub when it is reachable).
        cache_dir: where ``tiny:`` models are built and cached (default: the first of
            ``RLVR_MODEL_ROOTS``, else ``$RLVR_HOME/models``, else ``~/.rlvr/models``).
            Builds are keyed by the recipe's hash (code included), so a changed recipe
            builds anew; concurrent callers build once (file lock + atomic rename).

    Raises:
        ModelNotFoundError: with what was tried and how to make the model available.
    """
    if not isinstance(path_spec, str) or not path_spec.strip():
        raise ModelNotFoundError(
            "model.path is empty; use tiny:arithmetic, a directory or an HF id"
        )
    spec = path_spec.strip()
    if spec.startswith(TINY_PREFIX):
        return _resolve_tiny(
            spec, Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        )
    if spec in KNOWN_MODELS:
        return _resolve_imported(
            spec, Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        )
    local = Path(spec).expanduser()
    if local.is_dir():
        if (local / "config.json").is_file():
            return local.resolve()
        raise ModelNotFoundError(
            f"{spec}: the directory has no config.json; a model directory is what "
            "save_pretrained() writes (config.json, weights, tokenizer files)"
        )
    if not local.is_absolute():
        for root in model_roots():
            if (root / spec / "config.json").is_file():
                return (root / spec).resolve()
    if _HF_ID_RE.match(spec) and (found := _from_hf_cache(spec)) is not None:
        return found
    if "/" in spec and _HF_ID_RE.match(spec) and not local.is_absolute():
        return _from_hub(spec)
    roots = ", ".join(str(r) for r in model_roots())
    raise ModelNotFoundError(
        f"model {spec!r} not found: not a directory with config.json, not under the model "
        f"roots ({roots}), and not in the local Hugging Face cache (Hub models are named "
        "org/name, e.g. Qwen/Qwen2.5-0.5B-Instruct): copy the model directory here, or use "
        "tiny:arithmetic / tiny:countdown."
    )
