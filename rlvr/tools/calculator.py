"""``calculator``: arithmetic on numbers, evaluated from the AST (never ``eval``).

Allowed: int/float literals, ``+ - * / // % **``, unary ``+``/``-``, parentheses. Anything
else (names, calls, attributes, subscripts, strings) is an error. Powers are bounded so a
call cannot spend minutes or gigabytes: ``|exponent| <= 1000`` and results of at most
``MAX_DIGITS`` digits. Runs in-process because it evaluates nothing but numbers.
"""

from __future__ import annotations

import ast
import math
import operator
import time
from collections.abc import Callable

from rlvr.tools.base import Tool, ToolResult

MAX_EXPONENT = 1000
MAX_DIGITS = 1000
MAX_SOURCE_CHARS = 2000

_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[float], float]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}


class CalculatorError(ValueError):
    """The expression is not plain arithmetic, or its result would be too large."""


def _check_size(value: float) -> float:
    if isinstance(value, int) and abs(value).bit_length() > MAX_DIGITS * 3.33:
        raise CalculatorError(f"result has more than {MAX_DIGITS} digits")
    if isinstance(value, float) and not math.isfinite(value):
        raise CalculatorError("result is not a finite number")
    return value


def _eval(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise CalculatorError(f"only numbers are allowed, got {node.value!r}")
        return _check_size(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            if abs(right) > MAX_EXPONENT:
                raise CalculatorError(f"exponent {right} is larger than {MAX_EXPONENT}")
            # digits of left**right ~ right * digits(left): refuse before computing it
            ints = isinstance(left, int) and isinstance(right, int)
            if ints and right > 0 and abs(left) > 1 and right * math.log10(abs(left)) > MAX_DIGITS:
                raise CalculatorError(f"result has more than {MAX_DIGITS} digits")
        try:
            return _check_size(_BINARY[type(node.op)](left, right))
        except ZeroDivisionError as e:
            raise CalculatorError("division by zero") from e
        except OverflowError as e:
            raise CalculatorError("result is too large") from e
    raise CalculatorError(
        f"{type(node).__name__} is not allowed (numbers and + - * / // % ** only)"
    )


def evaluate(expression: str) -> float:
    """The value of an arithmetic expression; :class:`CalculatorError` for anything else."""
    if len(expression) > MAX_SOURCE_CHARS:
        raise CalculatorError(f"expression longer than {MAX_SOURCE_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as e:
        raise CalculatorError(f"not an expression: {e.msg}") from e
    return _eval(tree)


def format_number(value: float) -> str:
    """Integers as they are; floats that are whole as ints; others with repr's precision."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


class CalculatorTool(Tool):
    name = "calculator"
    description = (
        "Evaluates one arithmetic expression: numbers, + - * / // % ** and parentheses. "
        "Output: the value."
    )

    def run(self, code: str, timeout_s: float) -> ToolResult:
        t0 = time.perf_counter()
        try:
            out, error = format_number(evaluate(code)), False
        except CalculatorError as e:
            out, error = f"error: {e}", True
        except RecursionError:
            out, error = "error: expression nested too deeply", True
        return ToolResult(out, error, time.perf_counter() - t0)
