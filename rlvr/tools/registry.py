"""Finding tools by name: built-ins and entry-point plugins (group ``rlvr.tools``).

Works as the verifier registry does (the same :class:`verifiers.plugins.PluginRegistry`):
a package adds a tool with::

    [project.entry-points."rlvr.tools"]
    search = "my_pkg.tools:SearchTool"   # a rlvr.tools.Tool subclass

Built-ins are imported on first use so that importing this module stays cheap (no torch,
no Ray, no sandbox until a tool is built).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rlvr.tools.base import Tool
from verifiers.plugins import PluginRegistry

ENTRY_POINT_GROUP = "rlvr.tools"

_BUILTINS: dict[str, str] = {
    "python": "rlvr.tools.python:PythonTool",
    "calculator": "rlvr.tools.calculator:CalculatorTool",
}


@dataclass(frozen=True)
class ToolInfo:
    name: str
    description: str


class UnknownToolError(KeyError):
    """A tool name nothing provides; the message lists the known ones."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(name)
        self.name = name
        self.known = known

    def __str__(self) -> str:
        return f"unknown tool {self.name!r}; known tools: {', '.join(self.known)}"


_registry: PluginRegistry[Tool] = PluginRegistry(
    ENTRY_POINT_GROUP, Tool, _BUILTINS, UnknownToolError
)


def tool_names() -> list[str]:
    """Every tool name available here (built-ins and installed plugins), sorted."""
    return _registry.names()


def get_tool_class(name: str) -> type[Tool]:
    """The class registered as ``name``; :class:`UnknownToolError` when there is none."""
    return _registry.resolve(name)


def get_tool(name: str, **options: Any) -> Tool:
    """An instance of the tool registered as ``name`` (options go to its constructor)."""
    return get_tool_class(name)(**options)


def list_tools() -> list[ToolInfo]:
    """Every tool with its description; a plugin that fails to load says so."""
    out = []
    for name in tool_names():
        try:
            cls = get_tool_class(name)
        except Exception as exc:  # a broken plugin must not hide the others
            out.append(ToolInfo(name, f"(failed to load: {exc})"))
            continue
        out.append(ToolInfo(name, cls.description))
    return out
