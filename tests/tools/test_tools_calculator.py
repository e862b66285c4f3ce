"""The calculator tool: plain arithmetic only, bounded in size, never ``eval``."""

from __future__ import annotations

import pytest

from rlvr.tools.calculator import CalculatorError, CalculatorTool, evaluate


@pytest.mark.parametrize(
    ("expr", "value"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("7 // 2", 3),
        ("7 % 4", 3),
        ("2 ** 10", 1024),
        ("-3 + +4", 1),
        ("1 / 4", 0.25),
        ("2.5 * 2", 5.0),
        ("\n12 - 20\n", -8),
    ],
)
def test_arithmetic(expr, value):
    assert evaluate(expr) == value


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os').system('true')",  # a call
        "(1).__class__",  # attribute access
        "x + 1",  # a name
        "[1, 2][0]",  # a subscript / list
        "'a' * 3",  # a string
        "True + 1",  # bools are not numbers here
        "lambda: 1",
        "2 ** 100000",  # huge exponent
        "999999 ** 999",  # a result with too many digits, refused before computing it
        "10.0 ** 400",  # float overflow
        "1 / 0",
        "1 +",  # not an expression
    ],
)
def test_refuses(expr):
    with pytest.raises(CalculatorError):
        evaluate(expr)


def test_tool_reports_errors_as_output_not_exceptions():
    tool = CalculatorTool()
    ok = tool.run("6 * 7", timeout_s=1)
    assert (ok.output, ok.error) == ("42", False)
    bad = tool.run("open('/etc/passwd').read()", timeout_s=1)
    assert bad.error and bad.output.startswith("error:") and "Call" in bad.output
    deep = tool.run("(" * 5000 + "1" + ")" * 5000, timeout_s=1)
    assert deep.error
