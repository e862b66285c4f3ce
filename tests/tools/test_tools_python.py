"""The python tool runs the model's code in the real (bubblewrap) sandbox, never in-process."""

from __future__ import annotations

import os
import random

import pytest

from rlvr.tools.protocol import ToolCall
from rlvr.tools.python import PythonTool
from rlvr.tools.runner import ToolRunner, ToolsConfig


@pytest.fixture(scope="module")
def tool():
    t = PythonTool(
        backend="local",
        sandbox_options={"concurrency": 2, "uid_base": 63000 + random.randrange(0, 2000) * 16},
    )
    yield t
    t.close()


def test_prints_come_back(tool):
    r = tool.run("print(6 * 7)", timeout_s=5)
    assert (r.output, r.error) == ("42\n", False)
    assert r.time_s > 0


def test_errors_show_the_traceback(tool):
    r = tool.run("print('a')\n1 / 0", timeout_s=5)
    assert r.error and r.output.startswith("a\n") and "ZeroDivisionError" in r.output


def test_timeout_is_the_jobs(tool):
    r = tool.run("while True: pass", timeout_s=1)
    assert r.error and "timed out after 1 s" in r.output


def test_code_runs_outside_this_process(tool):
    r = tool.run("import os; print(os.getpid(), os.path.exists('/work/main'))", timeout_s=5)
    pid, sees_repo = r.output.split()
    assert int(pid) != os.getpid() and sees_repo == "False"


def test_runner_pools_calls_and_refuses_disabled_tools():
    runner = ToolRunner(ToolsConfig(enabled=["calculator"], workers=2))
    try:
        futures = [runner.submit(ToolCall("", f"{i} * 2", 0, 0)) for i in range(4)]
        assert [f.result().output for f in futures] == ["0", "2", "4", "6"]
        denied = runner.submit(ToolCall("python", "print(1)", 0, 0)).result()
        assert denied.error and "not enabled" in denied.output
    finally:
        runner.close()


def test_a_tool_that_raises_is_an_error_result_not_a_crash(monkeypatch):
    runner = ToolRunner(ToolsConfig(enabled=["calculator"], workers=1))
    try:

        def broken(code, timeout_s):
            raise RuntimeError("tool bug")

        monkeypatch.setattr(runner.tools["calculator"], "run", broken)
        result = runner.submit(ToolCall("calculator", "1", 0, 0)).result()
        assert result.error and result.output == "error: RuntimeError: tool bug"
    finally:
        runner.close()


def test_a_flood_of_output_is_stopped(tool):
    r = tool.run("while True: print('x' * 1000)", timeout_s=5)
    assert r.error and r.output.endswith("error: output too long, the program was stopped")
    assert len(r.output) < 70_000
