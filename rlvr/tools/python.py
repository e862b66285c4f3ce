"""``python``: the model's code runs in the project's sandbox (``sandbox``), never in-process.

Each call is a fresh program (no state carried between calls) under the sandbox's limits,
with ``wall_s`` set to the job's ``tools.timeout_s``. Its output is stdout, then stderr when
it failed. The sandbox is the process-wide shared one (its slots bound how many calls run at
once) unless ``sandbox_options`` ask for one of its own.
"""

from __future__ import annotations

import time
from typing import Any

from rlvr.tools.base import Tool, ToolResult


class PythonTool(Tool):
    name = "python"
    description = (
        "Runs a Python 3 program in a sandbox (no network, bounded CPU, memory and time). "
        "Output: what it prints (and the traceback when it fails)."
    )

    def __init__(
        self,
        backend: str = "auto",
        sandbox_options: dict[str, Any] | None = None,
        limits: dict[str, Any] | None = None,
    ) -> None:
        """``sandbox_options``: a sandbox of its own (``concurrency``, ...) instead of the
        process's shared one; ``limits``: extra ``sandbox.Limits`` fields (memory_mb, ...)."""
        self.backend = backend
        self.sandbox_options = sandbox_options or {}
        self.limits = limits or {}
        self._sandbox: Any = None

    def _get_sandbox(self) -> Any:
        if self._sandbox is None:
            from sandbox import get_sandbox

            self._sandbox = get_sandbox(self.backend, **self.sandbox_options)
        return self._sandbox

    def run(self, code: str, timeout_s: float) -> ToolResult:
        from sandbox import Limits, SandboxError

        t0 = time.perf_counter()
        try:
            # 64 kB of output is far more than tools.max_output_tokens keeps
            defaults = {"wall_s": timeout_s, "cpu_s": timeout_s, "output_bytes": 65536}
            limits = Limits(**{**defaults, **self.limits})
            r = self._get_sandbox().run_python(code, limits=limits)
        except SandboxError as e:
            return ToolResult(f"error: sandbox failed: {e}", True, time.perf_counter() - t0)
        out = r.stdout
        if r.timed_out:
            out += f"\nerror: timed out after {timeout_s:g} s"
        elif r.oom:
            out += "\nerror: out of memory"
        elif r.truncated:
            out += "\nerror: output too long, the program was stopped"
        elif r.exit_code != 0:
            out += r.stderr
        return ToolResult(out, not r.ok, time.perf_counter() - t0)

    def close(self) -> None:
        if self._sandbox is not None and self.sandbox_options:
            self._sandbox.close()  # the shared sandbox belongs to the process
        self._sandbox = None
