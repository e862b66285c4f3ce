"""The tool contract: code in, a :class:`ToolResult` out, within a time limit.

A tool is what a model may call mid-generation (docs/tools.md). It sees only the code the
model wrote: never the prompt's reference answer, never the verifier. Tools must be
thread-safe: the rollout engines run calls from a thread pool.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass
class ToolResult:
    """What one call produced.

    ``output`` is the text appended to the context as ``<output>...</output>`` (an error's
    message when the call failed, so the model can react to it); ``error`` is True when the
    call failed (bad input, a crash, a timeout); ``time_s`` is the wall time of the call.
    """

    output: str
    error: bool = False
    time_s: float = 0.0


class Tool(ABC):
    """A tool plugin. Subclasses set ``name`` and ``description`` and implement :meth:`run`."""

    name: str = ""
    description: str = ""

    @abstractmethod
    def run(self, code: str, timeout_s: float) -> ToolResult:
        """Run ``code`` (the text between the call markers), within ``timeout_s`` seconds.

        Must not raise for bad input: a failure is a :class:`ToolResult` with ``error=True``
        (the model is shown the message, as a programmer would be).
        """

    def close(self) -> None:  # noqa: B027 - optional hook, most tools hold nothing
        """Release what the tool holds (a sandbox pool); called when the engine stops."""
