"""A verifier pool worker: ``python -m verifiers._worker FD`` (started by ``VerifierPool``).

Protocol over the socket ``FD`` (pickled tuples, ``multiprocessing.connection`` framing):

    parent -> worker   {"memory_mb", "preload", "parent_pid"}       once, first
    worker -> parent   ("ready", pid)                                once started
    worker -> parent   ("started", req_id)    before an item whose verifier it had to load first
    parent -> worker   ("verify", req_id, name, module_hint, options, completion, reference, timeout_s)
    worker -> parent   ("result", req_id, "ok", Verdict, retire) | ("result", req_id, "reference_error", message, retire)
    parent -> worker   ("stop",)

``retire``: the worker exits after this answer (its state may be damaged) and the parent
starts a replacement.
"""

from __future__ import annotations

import importlib
import os
import resource
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

import verifiers.pool
from verifiers.base import BadReferenceError, Verdict, Verifier
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


def _load(name: str, module_hint: str | None, options: dict, cache: dict) -> tuple[Verifier, bool]:
    """The verifier instance, and whether it had to be imported/set up just now."""
    key = (name, repr(sorted(options.items())))
    if key in cache:
        return cache[key], False
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
    return verifier, True


def _verify_one(
    conn: Connection, req_id: int, request: tuple, cache: dict
) -> tuple[str, Any, bool]:
    """Run one item: (kind, payload, retire). ``retire``: this worker must not be reused."""
    name, module_hint, options, completion, reference, timeout_s = request
    try:
        verifier, loaded_now = _load(name, module_hint, options, cache)
    except Exception as exc:
        return (
            "ok",
            Verdict(0.0, False, "error", {"error": f"{type(exc).__name__}: {exc}"[:2000]}),
            False,
        )
    if loaded_now:  # the caller starts the item's clock now, not at dispatch
        conn.send(("started", req_id))
    modules_before = len(sys.modules)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        try:
            verdict = verifier.verify(completion, reference)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _SoftTimeout:
        # Interrupted pure computation leaves nothing half-done (finally blocks ran), but an
        # interrupted import leaves a half-initialised module behind: then start afresh.
        return "ok", Verdict(0.0, False, "timeout"), len(sys.modules) != modules_before
    except BadReferenceError as exc:
        return "reference_error", str(exc), False
    except Exception as exc:
        return (
            "ok",
            Verdict(0.0, False, "error", {"error": f"{type(exc).__name__}: {exc}"[:2000]}),
            False,
        )
    if not isinstance(verdict, Verdict):
        error = {"error": f"{name}.verify returned {type(verdict).__name__}"}
        return "ok", Verdict(0.0, False, "error", error), False
    return "ok", verdict, False


def main(fd: int) -> None:
    conn = Connection(fd)
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
        _, req_id, *request = message
        kind, payload, retire = _verify_one(conn, req_id, tuple(request), cache)
        try:
            conn.send(("result", req_id, kind, payload, retire))
        except (EOFError, OSError):
            return
        except Exception as exc:  # details that do not pickle
            error = {"error": f"verdict could not be sent back: {type(exc).__name__}: {exc}"}
            conn.send(("result", req_id, "ok", Verdict(0.0, False, "error", error), retire))
        if retire:
            return


if __name__ == "__main__":
    main(int(sys.argv[1]))
