"""Running the tool calls of a batch of rollouts: the engines' side of the protocol.

:class:`ToolsConfig` is what a job's ``tools`` section becomes on an engine (a plain
dataclass: it crosses Ray). :class:`ToolRunner` owns the enabled tools and a thread pool
sized to the sandbox's slots, so calls of many sequences run side by side, each under the
job's ``timeout_s``.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from rlvr.tools.base import Tool, ToolResult
from rlvr.tools.protocol import Markers, Protocol, ToolCall
from rlvr.tools.registry import get_tool


@dataclass
class ToolsConfig:
    """Tool use of a rollout (docs/tools.md). ``enabled`` empty: no tools, one turn.

    The whole completion (model and tool tokens) stays within the sampling's
    ``max_new_tokens``: the total token budget.
    """

    enabled: list[str] = field(default_factory=list)
    max_turns: int = 4  # model turns; a call in the last one is not run
    max_output_tokens: int = 256  # per tool output; longer outputs are cut with a marker
    timeout_s: float = 10.0  # per call
    workers: int = 4  # calls run at once (the sandbox's slots)
    markers: Markers = field(default_factory=Markers)

    @classmethod
    def from_spec(cls, tools: Any) -> ToolsConfig:
        """From a job spec's ``tools`` section (:class:`rlvr.config.ToolsSpec`)."""
        return cls(
            enabled=list(tools.enabled),
            max_turns=tools.max_turns,
            max_output_tokens=tools.max_output_tokens,
            timeout_s=tools.timeout_s,
            workers=tools.workers,
            markers=Markers(**tools.markers.model_dump()),
        )


@dataclass
class ToolStats:
    """Per completion: what its tool use cost (the ``tools/*`` metrics)."""

    calls: int = 0
    errors: int = 0
    turns: int = 1
    time_s: float = 0.0
    forged: int = 0  # model-written output blocks stripped


class ToolRunner:
    """The enabled tools of one engine and the pool their calls run in."""

    def __init__(self, config: ToolsConfig) -> None:
        if not config.enabled:
            raise ValueError("tools.enabled is empty: there is no tool to run")
        self.config = config
        self.protocol = Protocol(config.markers)
        self.tools: dict[str, Tool] = {name: get_tool(name) for name in config.enabled}
        self._pool = ThreadPoolExecutor(config.workers, thread_name_prefix="tool")

    def submit(self, call: ToolCall) -> Future[ToolResult]:
        """Run one call in the pool; an unknown or disabled tool is an error result."""
        name = call.name or self.config.enabled[0]
        tool = self.tools.get(name)
        if tool is None:
            message = f"error: tool {name!r} is not enabled; use one of {sorted(self.tools)}"
            done: Future[ToolResult] = Future()
            done.set_result(ToolResult(message, error=True))
            return done
        return self._pool.submit(self._run, tool, call.code)

    def _run(self, tool: Tool, code: str) -> ToolResult:
        t0 = time.perf_counter()
        try:
            result = tool.run(code, self.config.timeout_s)
        except Exception as e:  # a tool bug must not kill the rollout
            result = ToolResult(f"error: {type(e).__name__}: {e}", error=True)
        result.time_s = result.time_s or time.perf_counter() - t0
        return result

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for tool in self.tools.values():
            tool.close()
