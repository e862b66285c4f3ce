"""Where a training run reports to: the run directory, the service's job store, or both.

The loop calls a :class:`MetricSink`; it never knows whether a database is behind it.
Records are keyed by step so a resumed run can drop what came after its checkpoint
(``truncate_after``) and every step's metrics end up written exactly once.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

# One sample row, as written by the loop and shown by the samples viewer:
#   {"step": int, "prompt": str, "completion": str, "think": str | None, "answer": str,
#    "reference": Any, "reward": float, "passed": bool,
#    "verdicts": {verifier_name: {"score": float, "passed": bool, "reason": str, "details": {...}}}}
SampleRow = dict[str, Any]


@runtime_checkable
class MetricSink(Protocol):
    def metrics(self, step: int, values: dict[str, float]) -> None:
        """All metrics of one step (names: docs/design.md, "Metric names")."""

    def samples(self, step: int, rows: list[SampleRow]) -> None:
        """A few completions of one step with their rewards and verdicts."""

    def checkpoint(self, step: int, path: str) -> None:
        """A checkpoint (an HF-format directory) was written at ``path``."""

    def status(self, status: str, *, step: int | None = None, error: str | None = None) -> None:
        """``running``, ``succeeded``, ``failed`` or ``cancelled``, with the error text on failure."""

    def truncate_after(self, step: int) -> None:
        """Forget metrics and samples of steps > ``step`` (called when resuming from it)."""


class FanoutSink:
    """Sends every record to several sinks (run dir + job store)."""

    def __init__(self, *sinks: MetricSink | None):  # None: left out
        self.sinks = [s for s in sinks if s is not None]

    def metrics(self, step: int, values: dict[str, float]) -> None:
        for s in self.sinks:
            s.metrics(step, values)

    def samples(self, step: int, rows: list[SampleRow]) -> None:
        for s in self.sinks:
            s.samples(step, rows)

    def checkpoint(self, step: int, path: str) -> None:
        for s in self.sinks:
            s.checkpoint(step, path)

    def status(self, status: str, *, step: int | None = None, error: str | None = None) -> None:
        for s in self.sinks:
            s.status(status, step=step, error=error)

    def truncate_after(self, step: int) -> None:
        for s in self.sinks:
            s.truncate_after(step)
