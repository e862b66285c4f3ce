"""Finding verifiers by name: built-ins, ``@register_verifier`` and entry-point plugins."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from verifiers.base import Verifier
from verifiers.plugins import PluginRegistry

ENTRY_POINT_GROUP = "rlvr.verifiers"

# Built-ins are imported on first use so that importing `verifiers` stays cheap.
_BUILTINS: dict[str, str] = {
    "math": "verifiers.math:MathVerifier",
    "think_format": "verifiers.think_format:ThinkFormatVerifier",
    "countdown": "verifiers.countdown:CountdownVerifier",
    "code": "verifiers.code:CodeVerifier",
}


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


_registry: PluginRegistry[Verifier] = PluginRegistry(
    ENTRY_POINT_GROUP, Verifier, _BUILTINS, UnknownVerifierError
)


def register_verifier(name: str) -> Callable[[type[Verifier]], type[Verifier]]:
    """Class decorator: make ``cls`` available as ``get_verifier(name)``."""

    def deco(cls: type[Verifier]) -> type[Verifier]:
        if not (isinstance(cls, type) and issubclass(cls, Verifier)):
            raise TypeError(f"@register_verifier({name!r}) needs a Verifier subclass, got {cls!r}")
        _registry.register(name, cls)
        if not cls.name:
            cls.name = name
        return cls

    return deco


def _resolve(name: str) -> type[Verifier]:
    return _registry.resolve(name)


def get_verifier(name: str, **options: Any) -> Verifier:
    """An instance of the verifier registered as ``name`` (options go to its constructor)."""
    return _resolve(name)(**options)


def list_verifiers() -> list[VerifierInfo]:
    """Every verifier available here, with its description and reference format."""
    out = []
    for name in _registry.names():
        try:
            cls = _resolve(name)
        except Exception as exc:  # a broken plugin must not hide the others
            out.append(VerifierInfo(name, f"(failed to load: {exc})", ""))
            continue
        out.append(VerifierInfo(name, cls.description, cls.reference_format))
    return out
