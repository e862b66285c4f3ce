"""Tools a model may call mid-generation (tool-integrated reasoning; docs/tools.md).

``rlvr.tools.protocol`` parses calls and builds outputs; ``rlvr.tools.registry`` finds tools
(built-ins ``python`` and ``calculator``, plugins in the entry-point group ``rlvr.tools``);
``rlvr.tools.runner`` runs a batch's calls in a pool. Importable without torch or Ray.
"""

from rlvr.tools.base import Tool, ToolResult
from rlvr.tools.protocol import Markers, Protocol, ToolCall
from rlvr.tools.registry import (
    ENTRY_POINT_GROUP,
    ToolInfo,
    UnknownToolError,
    get_tool,
    list_tools,
    tool_names,
)
from rlvr.tools.runner import ToolRunner, ToolsConfig, ToolStats

__all__ = [
    "ENTRY_POINT_GROUP",
    "Markers",
    "Protocol",
    "Tool",
    "ToolCall",
    "ToolInfo",
    "ToolResult",
    "ToolRunner",
    "ToolStats",
    "ToolsConfig",
    "UnknownToolError",
    "get_tool",
    "list_tools",
    "tool_names",
]
