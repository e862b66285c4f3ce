"""Tools by name: the built-ins, a real entry-point plugin, unknown names."""

from __future__ import annotations

import pytest

from rlvr.tools import registry
from rlvr.tools.base import Tool
from rlvr.tools.registry import UnknownToolError, get_tool, list_tools, tool_names
from verifiers.plugins import PluginRegistry

PLUGIN = """
from rlvr.tools.base import Tool, ToolResult


class EchoTool(Tool):
    description = "Echoes its input reversed."

    def run(self, code, timeout_s):
        return ToolResult(code[::-1])
"""


@pytest.fixture
def echo_plugin(tmp_path, monkeypatch):
    """An installed distribution (a dist-info with entry_points.txt) providing ``echo``."""
    (tmp_path / "echo_tool_plugin.py").write_text(PLUGIN)
    dist = tmp_path / "echo_tool_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-tool-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[rlvr.tools]\necho = echo_tool_plugin:EchoTool\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    fresh = PluginRegistry(
        registry.ENTRY_POINT_GROUP, Tool, registry._BUILTINS, registry.UnknownToolError
    )
    monkeypatch.setattr(registry, "_registry", fresh)


def test_builtins():
    assert {"python", "calculator"} <= set(tool_names())
    assert get_tool("calculator").run("1+1", 1).output == "2"
    infos = {t.name: t.description for t in list_tools()}
    assert "sandbox" in infos["python"] and "arithmetic" in infos["calculator"]


def test_unknown_tool_lists_the_known_ones():
    with pytest.raises(UnknownToolError, match="known tools: .*calculator.*python"):
        get_tool("nope")


def test_entry_point_plugin(echo_plugin):
    assert "echo" in tool_names()
    tool = get_tool("echo")
    assert tool.name == "echo"
    assert tool.run("abc", 1).output == "cba"
    assert {"name": "echo", "description": "Echoes its input reversed."} in [
        vars(t) for t in list_tools()
    ]
