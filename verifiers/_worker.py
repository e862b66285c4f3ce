"""A verifier pool worker: ``python -m verifiers._worker FD BOARD_FD`` (started by
``VerifierPool``).

Protocol over the socket ``FD`` (pickled tuples, ``multiprocessing.connection`` framing):

    parent -> worker   {"memory_mb", "preload", "parent_pid", "retire_on_timeout"}   once, first
    worker -> parent   ("ready", pid)                                                once started
    parent -> worker   ("verify", req_id, timeout_s, [(name, module_hint, options, completion, reference), ...])
    worker -> parent   ("results", req_id, [("ok", Verdict) | ("reference_error", message), ...], retire, busy_s)
    parent -> worker   ("stop",)

The items of a batch run in order, each with its own ``timeout_s``. ``retire``: the worker
exits after this answer (its state may be damaged) and the parent starts a replacement; the
items after the one that retired it are not in the answer. ``busy_s``: seconds spent in
``verify`` (the pool sizes its batches by it).

``BOARD_FD`` is shared memory (``verifiers.pool._BOARD``) the worker rewrites as it begins
each item, or loads the verifier for one: how the parent times every item from its own
start, and knows which item a hung or crashed worker was on, without a message per item.
"""

from __future__ import annotations

import importlib
import mmap
import os
import pickle
import resource
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

import verifiers.pool
from verifiers.base import BadReferenceError, Verdict, Verifier
from verifiers.pool import _BOARD, _LOADING, _VERIFYING
from verifiers.registry import UnknownVerifierError, get_verifier


class _SoftTimeout(BaseException):
    """Raised by SIGALRM. A BaseException so that libraries' ``except Exception`` (sympy
    and math-verify have many) cannot swallow it."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise _SoftTimeout


def _watch_parent(parent_pid: int) -> None:
    # Orphaned workers (caller killed with SIGKILL) must not linger on a hung item.
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            os.killpg(0, signal.SIGKILL)


def _limit_memory(memory_mb: int | None) -> None:
    if not memory_mb:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = memory_mb * 1024 * 1024
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


_warmed: set[str] = set()  # modules whose _warm_up() has run


def _load(name: str, module_hint: str | None, options: dict, cache: dict) -> Verifier:
    """The verifier instance, imported and set up on first use."""
    key = (name, repr(sorted(options.items())))
    if key in cache:
        return cache[key]
    try:
        verifier = get_verifier(name, **options)
    except UnknownVerifierError:
        if module_hint is None:
            raise
        if module_hint == "__main__":
            raise RuntimeError(
                f"verifier {name!r} is registered in the caller's __main__ script, which "
                "pool workers do not import; define it in an importable module or "
                "register it through the 'rlvr.verifiers' entry point"
            ) from None
        importlib.import_module(module_hint)  # runs its @register_verifier
        verifier = get_verifier(name, **options)
    module = sys.modules.get(type(verifier).__module__)
    if module is not None and hasattr(module, "_warm_up") and module.__name__ not in _warmed:
        module._warm_up()  # its lazy imports happen now, not inside an item's time
        _warmed.add(module.__name__)
    cache[key] = verifier
    return verifier


def _mark(board: mmap.mmap, req_id: int, position: int, phase: int) -> None:
    _BOARD.pack_into(board, 0, req_id, position, phase, time.monotonic())


def _verify_one(
    board: mmap.mmap, req_id: int, position: int, request: tuple, timeout_s: float, cache: dict
) -> tuple[str, Any, bool, float]:
    """Run one item: (kind, payload, retire, seconds in ``verify``). ``retire``: this worker
    must not be reused."""
    name, module_hint, options, completion, reference = request
    if (name, repr(sorted(options.items()))) not in cache:
        _mark(board, req_id, position, _LOADING)  # the caller gives loading its own allowance
    try:
        verifier = _load(name, module_hint, options, cache)
    except Exception as exc:
        error = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        return "ok", Verdict(0.0, False, "error", error), False, 0.0
    _mark(board, req_id, position, _VERIFYING)  # the item's clock starts now
    modules_before = len(sys.modules)
    t0 = time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        try:
            verdict = verifier.verify(completion, reference)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            seconds = time.perf_counter() - t0
    except _SoftTimeout:
        # Interrupted pure computation leaves nothing half-done (finally blocks ran), but an
        # interrupted import leaves a half-initialised module behind: then start afresh.
        timeout = Verdict(0.0, False, "timeout")
        return "ok", timeout, len(sys.modules) != modules_before, seconds
    except BadReferenceError as exc:
        return "reference_error", str(exc), False, seconds
    except Exception as exc:
        error = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        return "ok", Verdict(0.0, False, "error", error), False, seconds
    if not isinstance(verdict, Verdict):
        error = {"error": f"{name}.verify returned {type(verdict).__name__}"}
        return "ok", Verdict(0.0, False, "error", error), False, seconds
    return "ok", verdict, False, seconds


def _run_batch(
    board: mmap.mmap, req_id: int, timeout_s: float, requests: list, cache: dict, config: dict
) -> tuple[list[tuple[str, Any]], bool, float]:
    """The batch's items in order: their (kind, payload), whether to retire (the items after
    the one that says so are not run), and the seconds spent verifying (loading verifiers
    not included: the pool sizes its batches by it)."""
    verdicts: list[tuple[str, Any]] = []
    busy_s = 0.0
    for position, request in enumerate(requests):
        kind, payload, retire, seconds = _verify_one(
            board, req_id, position, request, timeout_s, cache
        )
        busy_s += seconds
        verdicts.append((kind, payload))
        if config.get("retire_on_timeout") and payload == Verdict(0.0, False, "timeout"):
            retire = True  # whatever the item started must not outlive it
        if retire:
            return verdicts, True, busy_s
    return verdicts, False, busy_s


def _sendable(kind: str, payload: Any) -> tuple[str, Any]:
    try:
        pickle.dumps(payload)
    except Exception as exc:  # details that do not pickle
        error = {"error": f"verdict could not be sent back: {type(exc).__name__}: {exc}"}
        return "ok", Verdict(0.0, False, "error", error)
    return kind, payload


def main(fd: int, board_fd: int) -> None:
    conn = Connection(fd)
    board = mmap.mmap(board_fd, _BOARD.size)
    os.close(board_fd)
    config = conn.recv()
    verifiers.pool._in_worker = True
    _limit_memory(config["memory_mb"])
    threading.Thread(target=_watch_parent, args=(config["parent_pid"],), daemon=True).start()
    signal.signal(signal.SIGALRM, _on_alarm)
    for module_name in config["preload"]:
        module = importlib.import_module(module_name)
        if hasattr(module, "_warm_up"):
            module._warm_up()
            _warmed.add(module_name)
    conn.send(("ready", os.getpid()))

    cache: dict = {}
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the pool went away
        if message[0] == "stop":
            return
        _, req_id, timeout_s, requests = message
        verdicts, retire, busy_s = _run_batch(board, req_id, timeout_s, requests, cache, config)
        try:
            try:
                conn.send(("results", req_id, verdicts, retire, busy_s))
            except (EOFError, OSError):
                raise
            except Exception:  # one verdict's details do not pickle: only it becomes an error
                verdicts = [_sendable(kind, payload) for kind, payload in verdicts]
                conn.send(("results", req_id, verdicts, retire, busy_s))
        except (EOFError, OSError):
            return
        if retire:
            return


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
