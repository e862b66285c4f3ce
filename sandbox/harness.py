"""Call a program's function from test statements inside a sandbox, and report plain data.

This file is both a library for the grading side (``encode``/``decode``, ``parse_report``)
and, shipped into the sandbox as ``harness.py``, the script that runs there. It imports
only the standard library.

Why record and replay: grading must happen where the untrusted program cannot reach it. A
program can exit before the tests, print fake success lines, return objects whose
``__eq__`` is always true, or monkeypatch whatever compares results in its own process.
So the harness never *judges* in the process that ran the program; it only *records* what
the program's function returned, converted to plain data (``encode``: exact builtin types;
anything else is refused), and prints it on stdout behind a per-run nonce. The judge then
compares outside: the verifier in the parent for ``assert f(x) == <literal>`` shapes (the
expected value never enters the sandbox), or a second run that contains no program code
and *replays* the recorded values to the original test statements.

Modes (``harness.json`` in the work dir):

- ``record``: exec ``solution.py`` as module ``solution``, then run ``steps``: a ``setup``
  step is exec'd; a ``case`` step is exec'd with the entry point (and ``candidate``) bound to
  a recorder. Report per case: ``{"calls": [encoded result | ["!", ExceptionName], ...],
  "end": "ok" | "assert" | "timeout" | "raised:Name" | "skipped"}`` (after a case times
  out, the remaining cases are skipped). ``program_names`` (other functions of the program
  that the tests call) record into the same list.
- ``replay``: no program. The same steps, with the entry point bound to a replayer that
  returns the recorded values in order, and ``__hole_k`` bound to the k-th value (for
  asserts whose calls were cut out as holes). Report per case: ``{"end": ...}``.

With ``seed``, ``random`` is seeded before the steps in both modes, and the recorder
restores its state around every call of the program, so both runs draw the same inputs.

Every report line is ``\\n<nonce> <key> <json>\\n`` on fd 1; the program's own ``print``
output goes to /dev/null. A program can still write to fd 1, so :func:`parse_report`
treats a key reported twice as tampering, and a missing key as a failure.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

MAX_DEPTH = 100
_RANDOM: Any = None  # the seeded ``random`` module (when the spec has a seed)


def encode(value: object, depth: int = 0) -> list:
    """Plain data as a tagged JSON-able list; ``TypeError`` for anything else.

    Exact builtin values only: subclasses are read through the builtin type's own methods,
    so a subclass's overridden ``__eq__``/``__iter__``/``__str__`` is never consulted.
    """
    if depth > MAX_DEPTH:
        raise ValueError("value nested too deeply")
    if value is None:
        return ["n"]
    if type(value) is bool:
        return ["b", value]
    if isinstance(value, int):
        return ["i", int.__repr__(value)]
    if isinstance(value, float):
        return ["f", float.__repr__(value)]
    if isinstance(value, complex):
        c = complex.__complex__(value) if type(value) is not complex else value
        return ["c", float.__repr__(c.real), float.__repr__(c.imag)]
    if isinstance(value, str):
        return ["s", str.__str__(value)]
    if isinstance(value, bytes):
        return ["y", bytes.hex(value)]
    d = depth + 1
    if isinstance(value, list):
        return ["l", [encode(v, d) for v in list.__iter__(value)]]
    if isinstance(value, tuple):
        return ["t", [encode(v, d) for v in tuple.__iter__(value)]]
    if isinstance(value, dict):
        return ["d", [[encode(k, d), encode(v, d)] for k, v in dict.items(value)]]
    if isinstance(value, frozenset):
        return ["F", [encode(v, d) for v in frozenset.__iter__(value)]]
    if isinstance(value, set):
        return ["S", [encode(v, d) for v in set.__iter__(value)]]
    raise TypeError(f"not plain data: {type(value).__name__}")


def decode(tagged: object, depth: int = 0) -> object:
    """The value :func:`encode` tagged, built from fresh builtin objects; ``ValueError`` if
    ``tagged`` is malformed (it may come from a hostile program)."""
    if depth > MAX_DEPTH:
        raise ValueError("value nested too deeply")
    if not isinstance(tagged, list) or not tagged or not isinstance(tagged[0], str):
        raise ValueError(f"malformed value {str(tagged)[:80]}")
    tag, args, d = tagged[0], tagged[1:], depth + 1
    try:
        if tag == "n" and not args:
            return None
        if tag == "b" and type(args[0]) is bool:
            return bool(args[0])
        if tag == "i":
            return int(str(args[0]))
        if tag == "f":
            return float(str(args[0]))
        if tag == "c":
            return complex(float(str(args[0])), float(str(args[1])))
        if tag == "s" and isinstance(args[0], str):
            return str(args[0])
        if tag == "y":
            return bytes.fromhex(str(args[0]))
        if tag in "ltFS" and isinstance(args[0], list):
            items = [decode(v, d) for v in args[0]]
            return {"l": list, "t": tuple, "F": frozenset, "S": set}[tag](items)
        if tag == "d" and isinstance(args[0], list):
            return {decode(k, d): decode(v, d) for k, v in args[0]}
    except (IndexError, TypeError) as exc:
        raise ValueError(f"malformed value {str(tagged)[:80]}: {exc}") from exc
    raise ValueError(f"malformed value {str(tagged)[:80]}")


def parse_report(stdout: str, nonce: str) -> tuple[dict[str, object], set[str]]:
    """The report lines of one run: ({key: parsed json}, keys reported more than once)."""
    found: dict[str, object] = {}
    duplicated: set[str] = set()
    prefix = nonce + " "
    for line in stdout.split("\n"):
        if not line.startswith(prefix):
            continue
        key, _, payload = line[len(prefix) :].partition(" ")
        try:
            value = json.loads(payload)
        except ValueError:
            duplicated.add(key)  # a garbled line for a key: never trust that key
            continue
        if key in found:
            duplicated.add(key)
        found[key] = value
    return found, duplicated


# ------------------------------------------------------------ what runs inside the sandbox


class _CaseTimeout(BaseException):
    """Raised by SIGALRM; a BaseException so that ``except Exception`` in a program misses it."""


def _on_alarm(signum, frame):
    raise _CaseTimeout()


def _exception_class(name: str) -> type[BaseException]:
    """The builtin exception ``name``, else a new Exception subclass called ``name``."""
    import builtins

    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, BaseException):
        return cls
    return type(name, (Exception,), {})


class _Opaque:
    """Stands in for a return value that is not plain data."""

    def __repr__(self) -> str:
        return "<not plain data>"


def _recorder(fn, calls: list):
    def candidate(*args, **kwargs):
        state = _RANDOM.getstate() if _RANDOM is not None else None
        try:
            result = fn(*args, **kwargs)
        except _CaseTimeout:
            raise
        except BaseException as exc:
            calls.append(["!", type(exc).__name__])
            raise
        finally:  # what the program draws must not shift the tests' own draws
            if state is not None:
                _RANDOM.setstate(state)
        try:
            tagged = encode(result)
        except (TypeError, ValueError, RecursionError):
            calls.append(["?", type(result).__name__])
            return _Opaque()
        calls.append(tagged)
        return decode(tagged)  # the tests go on with a plain copy, never the program's object

    return candidate


def _replayer(recorded: list):
    queue = list(recorded)

    def candidate(*args, **kwargs):
        if not queue:
            raise RuntimeError("the program's run recorded no result for this call")
        item = queue.pop(0)
        if item[0] == "!":
            raise _exception_class(str(item[1]))("raised by the program under test")
        if item[0] == "?":
            return _Opaque()
        return decode(item)

    return candidate


def _run_step(code, ns: dict, timeout_s: float) -> str:
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        exec(code, ns)
        return "ok"
    except _CaseTimeout:
        return "timeout"
    except AssertionError:
        return "assert"
    except BaseException as exc:  # SystemExit and KeyboardInterrupt included: a failed case
        return "raised:" + type(exc).__name__
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _main() -> None:
    with open("harness.json") as f:
        spec = json.load(f)
    nonce, mode, timeout_s = spec["nonce"], spec["mode"], float(spec["timeout_s"])
    entry, names = spec["entry_point"], spec["candidate_names"]
    program_names = spec.get("program_names", [])

    def emit(key: object, obj: object) -> None:
        os.write(1, f"\n{nonce} {key} {json.dumps(obj)}\n".encode())

    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the program's prints are not the channel
    signal.signal(signal.SIGALRM, _on_alarm)
    ns: dict = {"__name__": "solution", "__file__": "solution.py"}
    fn = None
    if mode == "record":
        with open("solution.py", "rb") as program:
            source = program.read()
        try:
            end = _run_step(compile(source, "solution.py", "exec"), ns, timeout_s)
        except SyntaxError as exc:
            end = f"raised:SyntaxError: {exc.msg} (line {exc.lineno})"
        fn = ns.get(entry)
        if end == "ok" and not callable(fn):
            end = f"missing:{entry}"
        emit("load", {"end": end})
        if end != "ok":
            return
        helpers = {name: ns[name] for name in program_names if callable(ns.get(name))}
        ns = dict(ns)  # tests see the program's names, but rebinding theirs leaves it alone
    ns["__name__"] = "tests"
    if spec.get("seed") is not None:
        global _RANDOM
        import random

        random.seed(spec["seed"])
        _RANDOM = random
    case, timed_out = 0, False
    for kind, source in spec["steps"]:
        code = compile(source, "tests.py", "exec")
        if kind == "setup":
            end = _run_step(code, ns, timeout_s)
            if end != "ok":
                emit("setup", {"end": end})
                return
            continue
        calls: list = []
        if mode == "record":
            bound = _recorder(fn, calls)
            for name, helper in helpers.items():
                ns[name] = _recorder(helper, calls)
        else:
            recorded = spec["values"][case]
            bound = _replayer(recorded)
            for k, item in enumerate(recorded):  # asserts whose calls were cut out as holes
                ns[f"__hole_{k}"] = decode(item) if item[0] not in "!?" else _Opaque()
        for name in names if mode == "record" else [*names, *program_names]:
            ns[name] = bound
        # After one timeout the rest would likely time out too: skip them, keep runs short.
        end = "skipped" if timed_out else _run_step(code, ns, timeout_s)
        timed_out = timed_out or end == "timeout"
        emit(case, {"calls": calls, "end": end})
        case += 1
    emit("done", {})


if __name__ == "__main__":
    _main()
