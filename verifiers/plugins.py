"""A registry of plugin classes by name: built-ins, registered classes and entry points.

Shared by the verifier registry (``rlvr.verifiers`` entry points) and the tool registry
(``rlvr.tools``): built-ins are ``module:Class`` strings imported on first use, so listing
names stays cheap; entry points are loaded when first asked for, so a broken plugin only
fails when used.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar, cast

T = TypeVar("T")


class PluginRegistry(Generic[T]):
    """Classes deriving from ``base`` by name.

    Args:
        group: the entry-point group plugins are declared in.
        base: the class every plugin must derive from.
        builtins: ``name -> "module:Class"`` of the built-ins (imported on first use).
        unknown: builds the error raised for a name nothing provides (given the name and
            the known names).
    """

    def __init__(
        self,
        group: str,
        base: type,  # abstract classes too (mypy refuses them as type[T])
        builtins: dict[str, str],
        unknown: Callable[[str, list[str]], Exception],
    ) -> None:
        self.group = group
        self.base = base
        self.builtins = builtins
        self.unknown = unknown
        self.registered: dict[str, type[T] | EntryPoint] = {}
        self.plugins_loaded = False
        self._lock = threading.Lock()

    def register(self, name: str, cls: type[T]) -> None:
        with self._lock:
            self.registered[name] = cls

    def _load_plugins(self) -> None:
        if self.plugins_loaded:
            return
        with self._lock:
            for ep in entry_points(group=self.group):
                if ep.name not in self.registered and ep.name not in self.builtins:
                    self.registered[ep.name] = ep  # resolved lazily in resolve()
            self.plugins_loaded = True

    def names(self) -> list[str]:
        """Every name available here, sorted."""
        self._load_plugins()
        return sorted(set(self.builtins) | set(self.registered))

    def resolve(self, name: str) -> type[T]:
        """The class registered as ``name`` (its ``name`` attribute set when empty)."""
        self._load_plugins()
        target: Any = self.registered.get(name)
        if target is None and name in self.builtins:
            module, _, attr = self.builtins[name].partition(":")
            target = getattr(importlib.import_module(module), attr)
        if target is None:
            raise self.unknown(name, self.names())
        if not isinstance(target, type):  # an entry point not loaded yet
            loaded: Any = target.load()
            if not (isinstance(loaded, type) and issubclass(loaded, self.base)):
                raise TypeError(
                    f"entry point {name!r} in {self.group} is not a {self.base.__name__} class"
                )
            self.register(name, cast("type[T]", loaded))
            target = loaded
        if not getattr(target, "name", None):
            target.name = name
        return target
