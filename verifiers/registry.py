"""Finding verifiers by name: built-ins, ``@register_verifier`` and entry-point plugins."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from verifiers.base import Verifier

ENTRY_POINT_GROUP = "rlvr.verifiers"

# Built-ins are imported on first use so that importing `verifiers` stays cheap.
_BUILTINS: dict[str, str] = {
    "math": "verifiers.math:MathVerifier",
    "think_format": "verifiers.think_format:ThinkFormatVerifier",
    "countdown": "verifiers.countdown:CountdownVerifier",
    "code": "verifiers.code:CodeVerifier",
}

_registered: dict[str, type[Verifier] | EntryPoint] = {}  # plugins: resolved on first use
_lock = threading.Lock()
_plugins_loaded = False


@dataclass(frozen=True)
class VerifierInfo:
    name: str
    description: str
    reference_format: str


class UnknownVerifierError(KeyError):
    def __init__(self, name: str, known: list[str]):
        super().__init__(name)
        self.name = name
        self.known = known

    def __str__(self) -> str:
        return f"unknown verifier {self.name!r}; known verifiers: {', '.join(self.known)}"


def register_verifier(name: str) -> Callable[[type[Verifier]], type[Verifier]]:
    """Class decorator: make ``cls`` available as ``get_verifier(name)``."""

    def deco(cls: type[Verifier]) -> type[Verifier]:
        if not (isinstance(cls, type) and issubclass(cls, Verifier)):
            raise TypeError(f"@register_verifier({name!r}) needs a Verifier subclass, got {cls!r}")
        with _lock:
            _registered[name] = cls
        if not cls.name:
            cls.name = name
        return cls

    return deco


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    with _lock:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in _registered or ep.name in _BUILTINS:
                continue
            _registered[ep.name] = ep  # resolved lazily in _resolve
        _plugins_loaded = True


def _resolve(name: str) -> type[Verifier]:
    _load_plugins()
    target: Any = _registered.get(name)
    if target is None and name in _BUILTINS:
        module, _, attr = _BUILTINS[name].partition(":")
        target = getattr(importlib.import_module(module), attr)
    if target is None:
        raise UnknownVerifierError(name, sorted(set(_BUILTINS) | set(_registered)))
    if not isinstance(target, type):  # an entry point not loaded yet
        target = target.load()
        if not (isinstance(target, type) and issubclass(target, Verifier)):
            raise TypeError(f"entry point {name!r} in {ENTRY_POINT_GROUP} is not a Verifier class")
        with _lock:
            _registered[name] = target
    if not target.name:
        target.name = name
    return target


def get_verifier(name: str, **options: Any) -> Verifier:
    """An instance of the verifier registered as ``name`` (options go to its constructor)."""
    return _resolve(name)(**options)


def list_verifiers() -> list[VerifierInfo]:
    """Every verifier available here, with its description and reference format."""
    _load_plugins()
    out = []
    for name in sorted(set(_BUILTINS) | set(_registered)):
        try:
            cls = _resolve(name)
        except Exception as exc:  # a broken plugin must not hide the others
            out.append(VerifierInfo(name, f"(failed to load: {exc})", ""))
            continue
        out.append(VerifierInfo(name, cls.description, cls.reference_format))
    return out
