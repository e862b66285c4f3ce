"""The text protocol of tool calls (docs/tools.md).

A call is ``<tool name="python">print(6 * 7)</tool>``: the close marker is a stop string, so
the model's turn ends with it; the engine runs the tool and appends
``<output>42\n</output>`` (tokens the model did not write: masked out of the loss), then the
model continues. Every marker is configurable per job (``tools.markers``).

Honesty: ``<output>`` blocks the model writes itself are not tool output. They are stripped
from the text the verifiers see and counted (``forged``); a call is parsed from the turn's
text with them removed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

NAME_PLACEHOLDER = "{name}"
TRUNCATION_MARKER = "\n[... {n} more tokens truncated]"


@dataclass(frozen=True)
class Markers:
    """The strings around a call and its output.

    ``call_open`` may contain ``{name}`` (the tool's name, letters/digits/``_.-``); without it
    every call goes to the job's first enabled tool. ``call_close`` is the stop string that
    ends a turn.
    """

    call_open: str = '<tool name="{name}">'
    call_close: str = "</tool>"
    output_open: str = "<output>"
    output_close: str = "</output>"

    def __post_init__(self) -> None:
        for field in ("call_open", "call_close", "output_open", "output_close"):
            if not getattr(self, field):
                raise ValueError(f"tools.markers.{field} must be a non-empty string")
        if self.call_open.count(NAME_PLACEHOLDER) > 1:
            raise ValueError("tools.markers.call_open may contain {name} at most once")


@dataclass(frozen=True)
class ToolCall:
    name: str  # "" when call_open has no {name}: the first enabled tool
    code: str
    start: int  # offsets of the whole call in the text parsed
    end: int


class Protocol:
    """Parses calls and builds outputs for one set of :class:`Markers`."""

    def __init__(self, markers: Markers | None = None) -> None:
        self.markers = m = markers or Markers()
        before, has_name, after = m.call_open.partition(NAME_PLACEHOLDER)
        name = r"([A-Za-z0-9_.-]{1,64})" if has_name else "()"
        self._call = re.compile(
            re.escape(before) + name + re.escape(after) + r"(.*?)" + re.escape(m.call_close),
            re.DOTALL,
        )
        self._forged = re.compile(
            re.escape(m.output_open) + r".*?(?:" + re.escape(m.output_close) + "|$)", re.DOTALL
        )

    @property
    def stop(self) -> str:
        """The stop string that ends a model turn."""
        return self.markers.call_close

    def find_call(self, text: str) -> ToolCall | None:
        """The first complete call in ``text`` (forged output blocks removed first), or None."""
        match = self._call.search(self.strip_forged(text)[0])
        if match is None:
            return None
        return ToolCall(match.group(1), match.group(2).strip("\n"), match.start(), match.end())

    def strip_forged(self, text: str) -> tuple[str, int]:
        """``text`` without model-written output blocks (and stray close markers), and how
        many there were."""
        text, n = self._forged.subn("", text)
        close = self.markers.output_close
        n += text.count(close)
        return text.replace(close, ""), n

    def split_turns(self, text: str) -> list[dict[str, str]]:
        """A multi-turn completion's text as its parts, in order, for the samples viewer:
        ``{"kind": "model" | "tool_call" | "tool_output", "text": ..., "tool": name}``
        (``tool`` on calls only)."""
        m = self.markers
        output = re.compile(
            re.escape(m.output_open) + r"(.*?)" + re.escape(m.output_close), re.DOTALL
        )
        parts: list[dict[str, str]] = []
        pos = 0
        while pos < len(text):
            call, out = self._call.search(text, pos), output.search(text, pos)
            nxt = min((x for x in (call, out) if x), key=lambda x: x.start(), default=None)
            if nxt is None:
                parts.append({"kind": "model", "text": text[pos:]})
                break
            if nxt.start() > pos:
                parts.append({"kind": "model", "text": text[pos : nxt.start()]})
            if nxt is call:
                parts.append({"kind": "tool_call", "text": call.group(2), "tool": call.group(1)})
            else:
                parts.append({"kind": "tool_output", "text": nxt.group(1)})
            pos = nxt.end()
        return parts

    def wrap_output(self, output: str) -> str:
        """The text appended after a call. Markers inside the tool's output are removed so a
        tool cannot end the block early and pose as the model."""
        m = self.markers
        body = output.replace(m.output_open, "").replace(m.output_close, "")
        if body and not body.endswith("\n"):
            body += "\n"
        return f"{m.output_open}{body}{m.output_close}"


def truncate_tokens(
    ids: list[int], max_tokens: int, encode: Callable[[str], list[int]]
) -> tuple[list[int], bool]:
    """``ids`` cut to ``max_tokens`` with a marker saying how much was dropped."""
    if len(ids) <= max_tokens:
        return ids, False
    return ids[:max_tokens] + encode(TRUNCATION_MARKER.format(n=len(ids) - max_tokens)), True
