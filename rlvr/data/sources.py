"""Prompt sources: ``builtin:<generator>?k=v&...``, a ``.jsonl`` / ``.json`` / ``.parquet`` file,
or a Hugging Face dataset ``hf://datasets/<org>/<name>?config=<c>&split=<s>&revision=<r>``
(downloaded through ``datasets`` when the Hub is reachable, :mod:`rlvr.hub`; no Hub: a
:class:`DataError` in seconds naming the local-file alternative).

Row layouts recognised in files (first match wins):

=====================  =============================================================
``prompt, reference``  the native layout; optional ``verifier`` and ``id``
``prompt, tests``      code task: reference ``{"tests": tests}``, verifier ``code``
``prompt, test,        HumanEval-style code task: reference
entry_point``          ``{"test_code": test, "entry_point": entry_point}``, verifier ``code``
``question, answer``   GSM8K: the reference is what follows the last ``####``
``problem, solution``  MATH: the reference is the last ``\\boxed{…}`` (or ``answer`` if present)
=====================  =============================================================

A number as a reference becomes its string (the ``math`` verifier's format).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from rlvr.data import arithmetic, countdown, humaneval, word_problems
from rlvr.data.records import SPLITS, DataError, PromptRecord

BUILTIN_PREFIX = "builtin:"
FILE_SUFFIXES = (".jsonl", ".json", ".parquet")
# What a run can use, and what the service can check at submission (every row) in ~1 s.
MAX_BUILTIN_N = 50_000
MAX_SEED = 2**32 - 1

# -- built-in generators ---------------------------------------------------------------------
# name -> {param: (type, default)}; bounds are checked by the generator (ValueError -> DataError)
_BUILTIN_PARAMS: dict[str, dict[str, tuple[type, Any]]] = {
    "arithmetic": {
        "n": (int, 2000),
        "seed": (int, 0),
        "digits": (int, 2),
        "ops": (str, "+"),
        "split": (str, "all"),
    },
    "countdown": {
        "n": (int, 2000),
        "seed": (int, 0),
        "numbers": (int, 3),
        "max_number": (int, 20),
        "max_target": (int, 100),
        "ops": (str, countdown.OPS),
        "split": (str, "all"),
    },
    "word_problems": {"n": (int, 2000), "seed": (int, 0), "split": (str, "all")},
    "humaneval": {"n": (int, 164), "seed": (int, 0), "split": (str, "all")},  # n: at most
}
_GENERATORS: dict[str, Callable[..., list]] = {
    "arithmetic": arithmetic.generate,
    "countdown": countdown.generate,
    "word_problems": word_problems.generate,
    "humaneval": humaneval.generate,
}
# Other spellings people type for the operators (and '+' survives, unlike in URL forms).
_OP_ALIASES = {"x": "*", "×": "*", "−": "-", "÷": "/", " ": ""}


def parse_builtin(source: str) -> tuple[str, dict[str, Any]]:
    """``"builtin:arithmetic?n=10&ops=+-"`` -> ``("arithmetic", {"n": 10, "ops": "+-", ...})``."""
    body = source[len(BUILTIN_PREFIX) :]
    name, _, query = body.partition("?")
    if name not in _BUILTIN_PARAMS:
        raise DataError(
            source, None, None,
            f"unknown built-in data source {name!r}; known: "
            + ", ".join(f"builtin:{k}" for k in _BUILTIN_PARAMS),
        )  # fmt: skip
    spec = _BUILTIN_PARAMS[name]
    params = {k: default for k, (_, default) in spec.items()}
    given: set[str] = set()
    for pair in filter(None, query.split("&")):
        key, eq, raw = pair.partition("=")
        key = unquote(key)
        if key not in spec:
            raise DataError(source, None, key, f"unknown parameter; {name} takes {', '.join(spec)}")
        if not eq or raw == "":
            raise DataError(source, None, key, f"needs a value, e.g. {key}={spec[key][1]}")
        if key in given:
            raise DataError(source, None, key, "given twice")
        given.add(key)
        value = unquote(raw)  # not unquote_plus: '+' is an operator here
        if spec[key][0] is int:
            try:
                params[key] = int(value)
            except ValueError:
                raise DataError(source, None, key, f"must be an integer, got {value!r}") from None
        else:
            params[key] = value
    if not 1 <= params["n"] <= MAX_BUILTIN_N:
        raise DataError(source, None, "n", f"must be in 1..{MAX_BUILTIN_N}, got {params['n']}")
    if not 0 <= params["seed"] <= MAX_SEED:
        raise DataError(source, None, "seed", f"must be in 0..{MAX_SEED}, got {params['seed']}")
    if params["split"] not in SPLITS:
        raise DataError(source, None, "split", f"must be one of {', '.join(SPLITS)}")
    if "ops" not in params:
        return name, params
    ops = "".join(_OP_ALIASES.get(c, c) for c in params["ops"])
    allowed = arithmetic.OPS if name == "arithmetic" else countdown.OPS
    if not ops or any(c not in allowed for c in ops):
        raise DataError(
            source, None, "ops", f"must be a subset of {allowed!r}, got {params['ops']!r}"
        )
    params["ops"] = ops
    return name, params


def _load_builtin(source: str) -> list[PromptRecord]:
    name, params = parse_builtin(source)
    try:
        problems = _GENERATORS[name](**params)
    except ValueError as exc:  # a bound the generator checks (digits, numbers, ...)
        field = next((k for k in params if str(exc).startswith(k + " ")), None)
        raise DataError(source, None, field, str(exc)) from None
    tag = f"{name}-s{params['seed']}"
    return [p.to_record(f"{tag}-{i}") for i, p in enumerate(problems)]


# -- files -----------------------------------------------------------------------------------
def _resolve_path(source: str, data_roots: Sequence[Path] | None) -> Path:
    path = Path(source).expanduser()
    if data_roots is None:
        if not path.is_file():
            raise DataError(source, None, None, "file not found")
        return path
    roots = [Path(r).expanduser().resolve() for r in data_roots]
    candidates = [path] if path.is_absolute() else [root / path for root in roots]
    for cand in candidates:
        real = cand.resolve()
        if not any(real.is_relative_to(root) for root in roots):
            raise DataError(
                source, None, None,
                "is outside the data roots; put the file under one of: "
                + ", ".join(map(str, roots)) + " (RLVR_DATA_ROOTS)",
            )  # fmt: skip
        if real.is_file():
            return real
    raise DataError(
        source, None, None, "file not found under the data roots: " + ", ".join(map(str, roots))
    )


def _read_rows(source: str, path: Path) -> list[tuple[int, Any]]:
    """(1-based row number, parsed row) pairs; for .jsonl the row number is the line."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq

            rows = pq.read_table(path).to_pylist()
        except Exception as exc:
            raise DataError(source, None, None, f"cannot read parquet: {exc}") from None
        return list(enumerate(rows, start=1))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(source, None, None, f"not UTF-8 text: {exc}") from None
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(source, exc.lineno, None, f"not valid JSON: {exc.msg}") from None
        if not isinstance(data, list):
            raise DataError(source, None, None, "a .json file must hold a list of row objects")
        return list(enumerate(data, start=1))
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((lineno, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise DataError(source, lineno, None, f"not valid JSON: {exc.msg}") from None
    return rows


_HASHES_RE = re.compile(r"####\s*(.+?)\s*$", re.DOTALL)


def _last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth, j = 1, i
    while j < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        j += 1
    return text[i : j - 1].strip() if depth == 0 else None


def _need_str(source: str, rownum: int, row: dict, key: str) -> str:
    value = row[key]
    if not isinstance(value, str) or not value.strip():
        got = "an empty string" if isinstance(value, str) else type(value).__name__
        raise DataError(source, rownum, key, f"must be a non-empty string, got {got}")
    return value


def _record_from_row(source: str, rownum: int, row: Any, default_id: str) -> PromptRecord:
    if not isinstance(row, dict):
        raise DataError(source, rownum, None, f"must be an object, got {type(row).__name__}")
    verifier = row.get("verifier")
    if "prompt" in row:
        prompt = _need_str(source, rownum, row, "prompt")
        if row.get("reference") is not None:
            reference = row["reference"]
        elif row.get("tests") is not None:
            reference, verifier = {"tests": row["tests"]}, verifier or "code"
        elif row.get("test") is not None and row.get("entry_point") is not None:
            reference = humaneval.code_reference(prompt, row["test"], row["entry_point"])
            verifier = verifier or "code"
        else:
            raise DataError(
                source, rownum, "reference",
                "missing: every row needs the value its verifier checks against "
                "(the gold answer for math, tests for code)",
            )  # fmt: skip
    elif "question" in row and "answer" in row:  # GSM8K
        prompt = _need_str(source, rownum, row, "question")
        found = _HASHES_RE.search(_need_str(source, rownum, row, "answer"))
        if not found:
            raise DataError(
                source, rownum, "answer", "GSM8K layout needs '#### <answer>' at the end"
            )
        reference = found.group(1).replace(",", "")
    elif "problem" in row and "solution" in row:  # MATH
        prompt = _need_str(source, rownum, row, "problem")
        if isinstance(row.get("answer"), str) and row["answer"].strip():
            reference = row["answer"].strip()
        else:
            reference = _last_boxed(_need_str(source, rownum, row, "solution"))
            if not reference:
                raise DataError(
                    source,
                    rownum,
                    "solution",
                    "MATH layout needs a \\boxed{answer} in the solution",
                )
    else:
        raise DataError(
            source, rownum, "prompt",
            f"missing (row has {sorted(row)}); rows need prompt and reference, or the GSM8K "
            "layout (question, answer) or the MATH layout (problem, solution)",
        )  # fmt: skip
    if isinstance(reference, bool) or not isinstance(reference, str | int | float | dict | list):
        raise DataError(
            source, rownum, "reference",
            f"must be a string, number, object or list, got {type(reference).__name__}",
        )  # fmt: skip
    if isinstance(reference, int | float):
        reference = str(reference)
    if verifier is not None and (not isinstance(verifier, str) or not verifier.strip()):
        raise DataError(source, rownum, "verifier", "must be a verifier name (string) or null")
    row_id = row.get("id")
    if row_id is None:
        row_id = default_id
    elif not isinstance(row_id, str | int):
        raise DataError(source, rownum, "id", "must be a string or an integer")
    return PromptRecord(prompt=prompt, reference=reference, verifier=verifier, id=str(row_id))


def _load_file(source: str, data_roots: Sequence[Path] | None) -> list[tuple[int, PromptRecord]]:
    if not source.lower().endswith(FILE_SUFFIXES):
        raise DataError(
            source, None, None,
            "unsupported data source; use a .jsonl, .json or .parquet file, or "
            + " / ".join(f"builtin:{k}" for k in _BUILTIN_PARAMS),
        )  # fmt: skip
    path = _resolve_path(source, data_roots)
    rows = _read_rows(source, path)
    if not rows:
        raise DataError(source, None, None, "has no rows")
    return [(n, _record_from_row(source, n, row, f"{path.stem}-{n}")) for n, row in rows]


# -- Hugging Face datasets -------------------------------------------------------------------
HF_PREFIX = "hf://datasets/"
_HF_PARAMS = ("config", "split", "revision")
_HF_REPO_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$|^[A-Za-z0-9][\w.-]*$")


def parse_hf(source: str) -> tuple[str, dict[str, str]]:
    """``"hf://datasets/openai/gsm8k?config=main&split=train"`` ->
    ``("openai/gsm8k", {"config": "main", "split": "train"})``; ``split`` defaults to train."""
    body = source[len(HF_PREFIX) :]
    repo, _, query = body.partition("?")
    if not _HF_REPO_RE.match(repo):
        raise DataError(source, None, None, "needs a dataset id: hf://datasets/<org>/<name>")
    params = {"split": "train"}
    for pair in filter(None, query.split("&")):
        key, _, value = pair.partition("=")
        key, value = unquote(key), unquote(value)
        if key not in _HF_PARAMS:
            raise DataError(source, None, key, f"unknown parameter; takes {', '.join(_HF_PARAMS)}")
        if not value:
            raise DataError(source, None, key, "needs a value")
        params[key] = value
    return repo, params


def _load_hf(source: str) -> list[tuple[int, PromptRecord]]:
    """Rows of a Hub dataset (through ``datasets``), read with the file layouts above."""
    from rlvr import hub

    repo, params = parse_hf(source)
    try:
        hub.require_hub(
            "this dataset",
            "download the dataset where there is a network, save a split as .jsonl or "
            ".parquet, copy it here and give that file's path instead",
        )
    except hub.HubUnreachableError as exc:
        raise DataError(source, None, None, str(exc)) from None
    try:
        import datasets
    except ImportError:
        raise DataError(
            source, None, None, "needs the datasets package (pip install 'rlvr[hub]')"
        ) from None
    try:
        ds = datasets.load_dataset(
            repo, params.get("config"), split=params["split"], revision=params.get("revision")
        )
    except Exception as exc:  # no such dataset, config or split: the library's message
        raise DataError(source, None, None, f"cannot load from the Hub: {exc}") from None
    stem = repo.replace("/", "-")
    rows = list(enumerate(ds, start=1))
    if not rows:
        raise DataError(source, None, None, "has no rows")
    return [(n, _record_from_row(source, n, row, f"{stem}-{n}")) for n, row in rows]


# -- public ----------------------------------------------------------------------------------
def _load_numbered(
    source: str, data_roots: Sequence[Path] | None
) -> list[tuple[int, PromptRecord]]:
    if not isinstance(source, str) or not source.strip():
        raise DataError(str(source), None, None, "empty data source")
    source = source.strip()
    if source.startswith(BUILTIN_PREFIX):
        return list(enumerate(_load_builtin(source), start=1))
    if source.startswith(HF_PREFIX):
        if data_roots is not None:  # the service: files under its data roots only
            raise DataError(
                source, None, None,
                "the service reads data files under its data roots only, not the Hugging "
                "Face Hub; save the split as .jsonl or .parquet under a data root "
                "(RLVR_DATA_ROOTS) and give that path",
            )  # fmt: skip
        return _load_hf(source)
    return _load_file(source, data_roots)


def load_prompts(source: str, *, data_roots: list[Path] | None = None) -> list[PromptRecord]:
    """All prompt records of a source, in order.

    Args:
        source: ``builtin:arithmetic?n=2000&seed=0&digits=2&ops=+-*&split=train``,
            ``builtin:countdown?n=500&numbers=3``, a path to a ``.jsonl`` / ``.json`` /
            ``.parquet`` file (layouts in this module's docstring), or
            ``hf://datasets/openai/gsm8k?config=main&split=train``.
        data_roots: when given (the service), files must lie under one of these
            directories and relative paths are looked up in them; ``None`` (the CLI) reads
            any path, relative to the working directory.

    Raises:
        DataError: naming the source, the row and the field, and what to do about it.
    """
    return [rec for _, rec in _load_numbered(source, data_roots)]


def validate_source(
    source: str,
    data_roots: list[Path] | None = None,
    *,
    verifiers: Sequence[str] | None = None,
) -> int:
    """Check a source completely (every row) and return its number of rows.

    Beyond :func:`load_prompts`' checks, each row's reference is checked by the verifiers
    that will score it (``check_reference``): the row's own ``verifier``, or else each of
    ``verifiers`` (the job's reward verifiers) when given. Unknown verifier names are
    errors. The service calls this at submission, so a bad file fails before any training.
    """
    rows = _load_numbered(source, data_roots)
    from verifiers import get_verifier  # light: no torch, no Ray
    from verifiers.base import BadReferenceError

    cache: dict[str, Any] = {}

    def verifier(name: str, rownum: int) -> Any:
        if name not in cache:
            try:
                cache[name] = get_verifier(name)
            except KeyError as exc:
                raise DataError(source, rownum, "verifier", str(exc).strip("'\"")) from None
        return cache[name]

    for i, rec in rows:
        for name in [rec.verifier] if rec.verifier else (verifiers or []):
            try:
                verifier(name, i).check_reference(rec.reference)
            except BadReferenceError as exc:
                raise DataError(
                    source, i, "reference", f"not a valid reference for verifier {name!r}: {exc}"
                ) from None
    return len(rows)
