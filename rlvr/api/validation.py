"""Checks a job spec against this service before it is queued.

Pydantic (``JobSpec``, ``extra=forbid``, bounds on every number) catches malformed specs.
This module catches what only the service can know: which verifiers exist here, whether the
model and the data files exist *inside the configured roots*, whether every data row is
usable, and hyperparameters that are each in bounds but absurd together. Every problem is
reported as a FastAPI-style error (``loc``, ``msg``, ``type``) so a 422 names the field.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from rlvr.api.models import nesting_depth
from rlvr.api.settings import Settings
from rlvr.config import JobSpec
from rlvr.models.importer import KNOWN_MODELS

# Completions sampled per step (prompts_per_step x group_size) beyond which a run is a typo.
MAX_COMPLETIONS_PER_STEP = 65_536
# Tokens a single step may generate (completions x max_new_tokens).
MAX_TOKENS_PER_STEP = 2**28

# A spec is a small document: nesting and its stored (expanded) size are bounded.
MAX_SPEC_NESTING = 32
MAX_STORED_SPEC_BYTES = 256_000
MAX_TINY_SEED = 9999

ErrorList = list[dict[str, Any]]


# -- the body --------------------------------------------------------------------------------
class _SpecLoader(yaml.SafeLoader):
    """``yaml.safe_load`` without anchors and aliases (520 bytes of nested aliases expand to
    a 69 MB document) and with bounded nesting (deep nesting is a RecursionError)."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise yaml.YAMLError(
                f"line {event.start_mark.line + 1}: YAML anchors and aliases (&name, *name) "
                "are not accepted in a job spec; write the values out"
            )
        self._depth += 1
        try:
            if self._depth > MAX_SPEC_NESTING:
                raise yaml.YAMLError(f"nested deeper than {MAX_SPEC_NESTING} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def parse_spec_body(raw: bytes, media_type: str) -> Any:
    """The document in a JSON or YAML body; ``ValueError`` saying what is wrong with it."""
    kind = "YAML" if "yaml" in media_type else "JSON"
    try:
        if not raw.strip():
            return None
        if kind == "YAML":
            return yaml.load(raw.decode("utf-8"), Loader=_SpecLoader)  # a safe loader
        data = json.loads(raw)
    except RecursionError:
        raise ValueError(f"the {kind} body is nested too deeply") from None
    except (ValueError, yaml.YAMLError) as exc:
        raise ValueError(f"the body is not valid {kind}: {exc}") from None
    if nesting_depth(data) > MAX_SPEC_NESTING:
        raise ValueError(f"the {kind} body is nested deeper than {MAX_SPEC_NESTING} levels")
    return data


def _error(loc: tuple[Any, ...], msg: str, kind: str = "value_error") -> dict[str, Any]:
    return {"loc": ["body", *loc], "msg": msg, "type": kind}


def _under(path: Path, roots: list[Path]) -> bool:
    return any(path.is_relative_to(r.expanduser().resolve()) for r in roots)


def _roots_text(roots: list[Path], env: str) -> str:
    return ", ".join(str(r) for r in roots) + f" ({env})"


# -- verifiers -------------------------------------------------------------------------------
def verifier_option_problems(name: str, options: Any) -> list[tuple[tuple[Any, ...], str]]:
    """``(option path, message)`` for each bad option of verifier ``name`` (its typed options
    model), plus a sandbox backend this service cannot run. Empty: the options are usable."""
    from verifiers.options import OptionsError, validate_options

    try:
        checked = validate_options(name, options)
    except OptionsError as exc:
        return exc.errors
    if name == "code" and checked.get("image") is not None:
        from sandbox import ALLOWED_IMAGES_ENV, allowed_images

        if checked["image"] not in (allowed := allowed_images()):
            return [
                (
                    ("image",),
                    f"image {checked['image']!r} is not allowed here; allowed: "
                    f"{', '.join(allowed)} (the service's {ALLOWED_IMAGES_ENV})",
                )
            ]
    if name == "code" and checked.get("backend") == "docker":
        from sandbox import docker_available, sandbox_image

        if not docker_available():
            return [(("backend",), "no Docker engine answers here; use 'auto' or 'local'")]
        image = sandbox_image(checked.get("image"))
        if not docker_available(image=image):
            return [(("image",), f"image {image!r} is not present on the Docker engine")]
    return []


def _check_verifiers(spec: JobSpec) -> tuple[ErrorList, list[str]]:
    from verifiers import get_verifier, list_verifiers

    known = [v.name for v in list_verifiers()]
    errors: ErrorList = []
    usable: list[str] = []
    for i, ref in enumerate(spec.reward.verifiers):
        loc = ("reward", "verifiers", i)
        if ref.name not in known:
            errors.append(
                _error(
                    (*loc, "name"),
                    f"unknown verifier {ref.name!r}; this service has: {', '.join(known)}",
                )
            )
            continue
        problems = verifier_option_problems(ref.name, ref.options)
        for where, msg in problems:
            errors.append(_error((*loc, "options", *where), f"verifier {ref.name!r}: {msg}"))
        if problems:
            continue
        try:
            get_verifier(ref.name, **ref.options)
        except (TypeError, ValueError) as exc:  # a plugin's constructor: a bad or unknown option
            errors.append(
                _error((*loc, "options"), f"verifier {ref.name!r} rejects these options: {exc}")
            )
            continue
        except Exception as exc:
            errors.append(
                _error((*loc, "name"), f"verifier {ref.name!r} cannot be loaded here: {exc}")
            )
            continue
        usable.append(ref.name)
    return errors, usable


# -- model -----------------------------------------------------------------------------------
def _looks_like_path(value: str) -> bool:
    return value.startswith(("/", ".", "~")) or value.count("/") > 1 or "\\" in value


def _check_model(spec: JobSpec, settings: Settings) -> tuple[ErrorList, str]:
    """Returns (errors, the model path to store: local directories made absolute)."""
    value = spec.model.path
    loc = ("model", "path")
    if value.startswith("tiny:"):
        problem = _tiny_problem(value)
        return ([_error(loc, problem)] if problem else []), value
    if value in KNOWN_MODELS:  # imported from a package's GGUF file by the trainer
        problem = _imported_problem(value)
        return ([_error(loc, problem)] if problem else []), value
    roots = list(settings.model_roots)
    if _looks_like_path(value):
        raw = Path(value).expanduser()
        candidates = [raw] if raw.is_absolute() else [r.expanduser() / raw for r in roots]
        for cand in candidates:
            real = cand.resolve()
            if not _under(real, roots):
                return [
                    _error(loc, f"{value!r} is outside the model roots; put the model under "
                           + _roots_text(roots, "RLVR_MODEL_ROOTS"))
                ], value  # fmt: skip
            if real.is_dir():
                if not (real / "config.json").is_file():
                    return [
                        _error(loc, f"{value!r} is a directory without config.json; give a "
                               "Hugging Face model directory (save_pretrained)")
                    ], value  # fmt: skip
                return [], str(real)
        return [
            _error(loc, f"model directory {value!r} not found under the model roots: "
                   + _roots_text(roots, "RLVR_MODEL_ROOTS"))
        ], value  # fmt: skip
    # A Hugging Face id; a directory of that name under a model root wins.
    for root in roots:
        local = (root.expanduser() / value).resolve()
        if _under(local, roots) and (local / "config.json").is_file():
            return [], str(local)
    try:
        from huggingface_hub import try_to_load_from_cache
        from huggingface_hub.utils import validate_repo_id

        validate_repo_id(value)
    except ImportError:
        return [], value
    except Exception as exc:
        return [_error(loc, f"{value!r} is neither tiny:<task>, a model directory nor a "
                       f"Hugging Face id: {exc}")], value  # fmt: skip
    # Nothing is downloaded at run time (the trainer resolves ids in the local cache only).
    if not isinstance(try_to_load_from_cache(value, "config.json"), str):
        return [
            _error(loc, f"model {value!r} is not in the local Hugging Face cache and nothing "
                   "is downloaded at run time; put the model directory under "
                   + _roots_text(roots, "RLVR_MODEL_ROOTS") + " or use tiny:arithmetic")
        ], value  # fmt: skip
    return [], value


def _tiny_problem(value: str) -> str | None:
    """What is wrong with a ``tiny:<task>?size=&seed=&warm_start=`` spec (None: nothing).
    Only parsed here: building the model is the driver's work."""
    try:
        from rlvr.models.resolve import tiny_model_dir_name
    except ImportError:  # the tiny-model builder is not installed: the trainer reports it
        return None
    try:
        tiny_model_dir_name(value)
    except Exception as exc:
        return f"{exc}; built-in tiny models: tiny:arithmetic, tiny:countdown"
    seed = re.search(r"(?:\?|&)seed=(-?\d+)", value)
    if seed and not 0 <= int(seed.group(1)) <= MAX_TINY_SEED:
        # Each seed is a model of its own, built by the driver and cached on disk.
        return f"{value}: seed must be in 0..{MAX_TINY_SEED}"
    return None


def _imported_problem(value: str) -> str | None:
    """Why an imported model (``smollm2-135m-instruct``) is unavailable here (None: it is).
    Only its package is looked for: importing is the driver's work."""
    from rlvr.models.resolve import imported_model_dir_name

    try:
        imported_model_dir_name(value)
    except LookupError as exc:
        return str(exc)
    return None


# -- data ------------------------------------------------------------------------------------
def _check_data(
    spec: JobSpec, settings: Settings, verifier_names: list[str]
) -> tuple[ErrorList, dict[tuple, str]]:
    """Returns (errors, {loc: normalised source}) with files made absolute paths."""
    from rlvr.data import DataError, validate_source
    from rlvr.data.chat import BUILTIN_TEMPLATES, TemplateError, resolve_template_file

    errors: ErrorList = []
    normalised: dict[tuple, str] = {}
    roots = list(settings.data_roots)
    sources: list[tuple[tuple[str, ...], Any]] = [
        (("data", f), getattr(spec.data, f)) for f in ("train", "eval")
    ]
    sources += [(("eval", "sets", name), src) for name, src in spec.eval.sets.items()]
    for loc, source in sources:
        if source is None:
            continue
        try:
            rows = validate_source(source, roots, verifiers=verifier_names)
        except DataError as exc:
            msg = exc.message
            if exc.row is not None:
                msg = (
                    f"row {exc.row}" + (f", field {exc.field!r}" if exc.field else "") + f": {msg}"
                )
            elif exc.field:
                msg = f"{exc.field!r}: {msg}"
            errors.append(_error(loc, f"{source}: {msg}"))
            continue
        except Exception as exc:  # a reader's own error (bad parquet...): still the user's file
            errors.append(_error(loc, f"{source}: cannot be read: {exc}"))
            continue
        if rows == 0:
            errors.append(_error(loc, f"{source}: has no rows"))
            continue
        if not source.startswith("builtin:"):
            normalised[loc] = _resolve_data_path(source, roots)
    if spec.data.template not in BUILTIN_TEMPLATES:  # a Jinja file: under the data roots too
        try:
            normalised[("data", "template")] = str(resolve_template_file(spec.data.template, roots))
        except TemplateError as exc:
            errors.append(_error(("data", "template"), str(exc).removeprefix("data.template: ")))
    return errors, normalised


def _resolve_data_path(source: str, roots: list[Path]) -> str:
    """The absolute file validate_source accepted (the driver may run elsewhere)."""
    raw = Path(source).expanduser()
    for cand in [raw] if raw.is_absolute() else [r.expanduser() / raw for r in roots]:
        if cand.resolve().is_file():
            return str(cand.resolve())
    return source


# -- hyperparameters -------------------------------------------------------------------------
def _check_scale(spec: JobSpec) -> ErrorList:
    a, r = spec.algorithm, spec.rollout
    errors: ErrorList = []
    completions = a.prompts_per_step * a.group_size
    if completions > MAX_COMPLETIONS_PER_STEP:
        errors.append(
            _error(
                ("algorithm", "prompts_per_step"),
                f"prompts_per_step x group_size = {completions} completions per step; the "
                f"limit is {MAX_COMPLETIONS_PER_STEP}: lower one of them",
            )
        )
    elif completions * r.max_new_tokens > MAX_TOKENS_PER_STEP:
        errors.append(
            _error(
                ("rollout", "max_new_tokens"),
                f"{completions} completions x {r.max_new_tokens} new tokens per step is beyond "
                f"{MAX_TOKENS_PER_STEP} tokens: lower max_new_tokens or the batch",
            )
        )
    if a.warmup_steps > a.max_steps:
        errors.append(
            _error(
                ("algorithm", "warmup_steps"),
                f"warmup_steps ({a.warmup_steps}) exceeds max_steps ({a.max_steps}): the "
                "learning rate would never reach its value",
            )
        )
    return errors


def _without_server_paths(error: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The error with each data/model root's absolute path replaced by the root's name
    (``/srv/rlvr/data/x.jsonl`` -> ``data/x.jsonl``): a caller learns nothing of the
    server's file system beyond the names it may use."""
    msg = error["msg"]
    roots = [*settings.data_roots, *settings.model_roots]
    spellings = {str(p): r.expanduser().name for r in roots for p in (r, r.expanduser().resolve())}
    for path in sorted(spellings, key=len, reverse=True):
        msg = msg.replace(path, spellings[path])
    return {**error, "msg": msg}


def check_spec(spec: JobSpec, settings: Settings) -> tuple[JobSpec, ErrorList]:
    """Every problem with ``spec`` on this service, and the spec to store (local model and
    data paths made absolute). An empty error list means the job can be queued."""
    verifier_errors, verifier_names = _check_verifiers(spec)
    model_errors, model_path = _check_model(spec, settings)
    data_errors, data_paths = _check_data(spec, settings, verifier_names)
    errors = verifier_errors + model_errors + data_errors + _check_scale(spec)
    if errors:
        return spec, [_without_server_paths(e, settings) for e in errors]
    update: dict[str, Any] = {}
    if model_path != spec.model.path:
        update["model"] = spec.model.model_copy(update={"path": model_path})
    if paths := {loc[1]: p for loc, p in data_paths.items() if loc[0] == "data"}:
        update["data"] = spec.data.model_copy(update=paths)
    if paths := {loc[2]: p for loc, p in data_paths.items() if loc[0] == "eval"}:
        update["eval"] = spec.eval.model_copy(update={"sets": {**spec.eval.sets, **paths}})
    return (spec.model_copy(update=update) if update else spec), []
