"""Run verifiers in worker processes with a hard per-item timeout.

A verifier is user-facing code fed model output (sympy can spend minutes on
``9^{9^{9^9}}``, a plugin can loop forever), so the reward side of a training step waits on
each item for at most ``timeout_s``::

    with VerifierPool(workers=2, timeout_s=5.0) as pool:
        verdicts = pool.verify_many([("math", {}, "<answer>4</answer>", "4")])

A ``SIGALRM`` timer in the worker interrupts Python code; a worker stuck in C code is killed
and replaced. Workers are fresh interpreters, never forks, and get only an allowlist of the
caller's environment (:func:`worker_env`). How and why: docs/verifiers.md, "Running
verifiers at scale".
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from verifiers.base import BadReferenceError, Verdict, Verifier
from verifiers.registry import _BUILTINS, _resolve

# How long after the soft timeout the caller kills a worker stuck in C code.
_KILL_GRACE_S = 0.25
# How far down the queue a worker looks for an item whose reference it likely has cached.
_AFFINITY_SCAN = 256
# Workers dying in a row before they are ready that make verify_many raise.
_MAX_FAILED_STARTS = 3

_in_worker = False  # set by verifiers._worker in worker processes


def in_worker() -> bool:
    """True inside a pool worker: verifiers then run in-process (no nested pools)."""
    return _in_worker


class _Worker:
    """One worker process and the parent's end of its socket."""

    def __init__(self, proc: subprocess.Popen, conn: Connection, slot: int):
        self.proc = proc
        self.conn = conn
        self.slot = slot  # which share of the references it prefers (kept by a replacement)
        self.ready = False  # set when the worker has said it finished starting
        self.started_at = time.monotonic()
        self.loaded: set[tuple[str, str]] = set()  # verifiers it has imported and set up

    def kill(self) -> None:
        # The worker leads its own session: killing the group also ends whatever it
        # started (a sandbox, a subprocess of a plugin).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.conn.close()


@dataclass
class _Job:
    index: int  # position in the caller's items
    req_id: int  # guards against a late answer to an earlier request
    key: tuple[str, str]  # (verifier name, options): what the worker must have loaded
    timeout_s: float
    # The item's clock starts once the worker is ready and has loaded the verifier (a
    # one-off per worker, bounded by setup_deadline): only verification time counts.
    deadline: float | None = None
    setup_deadline: float | None = None


class VerifierPool:
    """Runs verifiers in worker processes with a hard per-item timeout.

    Args:
        workers: number of worker processes (each one core when busy).
        timeout_s: default per-item limit, counted from when a ready worker (with the
            verifier loaded) gets the item.
        memory_mb: address-space limit of each worker (``RLIMIT_AS``), so a runaway
            expression raises ``MemoryError`` instead of swapping the machine; ``None``
            for no limit.
        startup_timeout_s: how long a starting worker may take to import its verifiers.
        preload: modules imported (and warmed up, via their ``_warm_up()`` if any) by
            each worker before it reports ready, so the first item is not slow.
        retire_on_timeout: replace a worker whose item ran out of time even when it
            recovered by itself, so that nothing the item started (sandbox runs in other
            threads) outlives it; the API's pool sets it.

    Thread-safe: concurrent ``verify_many`` calls each borrow idle workers.
    """

    def __init__(
        self,
        workers: int = 2,
        timeout_s: float = 10.0,
        *,
        memory_mb: int | None = 4096,
        startup_timeout_s: float = 60.0,
        preload: Sequence[str] = ("verifiers.math",),
        retire_on_timeout: bool = False,
    ):
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"VerifierPool(workers=...) must be an integer >= 1, got {workers!r}")
        _check_timeout(timeout_s, "timeout_s")
        _check_timeout(startup_timeout_s, "startup_timeout_s")
        self.workers = workers
        self.timeout_s = float(timeout_s)
        self._memory_mb = memory_mb
        self._startup_timeout_s = float(startup_timeout_s)
        self._preload = list(preload)
        self._retire_on_timeout = retire_on_timeout
        self._pid = os.getpid()
        self._cond = threading.Condition()
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self._closed = False
        self._req_ids = itertools.count()
        self._instances: dict[tuple[str, str], Verifier] = {}
        self.restarts = 0  # workers killed (timeout) or lost (crash) and replaced
        self._failed_starts = 0  # workers in a row that died before they were ready
        for slot in range(workers):
            self._idle.append(self._spawn(slot))

    # ------------------------------------------------------------------ public

    def verify_many(
        self, items: Sequence[tuple[str, dict, str, Any]], timeout_s: float | None = None
    ) -> list[Verdict]:
        """Score many items, in order.

        Args:
            items: ``(verifier_name, verifier_options, completion, reference)`` tuples.
            timeout_s: per-item limit for this call (default: the pool's ``timeout_s``).

        Never raises for a hung or crashed item: a timeout gives
        ``Verdict(0.0, False, "timeout")``, a crash ``Verdict(0.0, False, "error",
        {"error": ...})``, and the worker is killed and replaced. Raises for caller
        errors: an unknown verifier name (``UnknownVerifierError``, before anything
        runs), bad options (``TypeError``/``ValueError``), a malformed reference
        (``BadReferenceError``; checked up front where the verifier can, else after the
        batch has finished); and ``RuntimeError`` when workers cannot start at all
        (several in a row die before they are ready), rather than scoring everything 0.
        """
        timeout = self.timeout_s if timeout_s is None else _check_timeout(timeout_s, "timeout_s")
        requests = [self._prepare(i, item) for i, item in enumerate(items)]
        results: list[Verdict | None] = [None] * len(requests)
        reference_errors: list[str] = []
        pending = deque(range(len(requests)))
        inflight: dict[_Worker, _Job] = {}
        try:
            while pending or inflight:
                self._dispatch(pending, inflight, requests, timeout)
                self._collect(inflight, results, reference_errors)
        finally:
            # Only reached with work in flight if the caller was interrupted: those
            # workers would answer a request nobody waits for, so replace them.
            for worker in list(inflight):
                self._replace(worker)
        if reference_errors:
            raise BadReferenceError(reference_errors[0])
        return results  # type: ignore[return-value]

    def worker_pids(self) -> list[int]:
        """Process ids of the current workers (for monitoring and tests)."""
        with self._cond:
            return sorted(w.proc.pid for w in self._all)

    def close(self) -> None:
        """Stop every worker. Idempotent; a closed pool refuses new work."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            workers = list(self._all)
            self._all.clear()
            self._idle.clear()
            self._cond.notify_all()
        for w in workers:
            try:
                w.conn.send(("stop",))
                w.proc.wait(timeout=2)
                w.conn.close()
            except (OSError, subprocess.TimeoutExpired):
                w.kill()

    def __enter__(self) -> VerifierPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- internals

    def _prepare(self, index: int, item: Any) -> tuple:
        """Validate one item in the caller (cheap checks only) and build its request."""
        if not (isinstance(item, tuple | list) and len(item) == 4):
            raise TypeError(
                f"items[{index}] must be a (verifier_name, verifier_options, completion, "
                f"reference) tuple, got {type(item).__name__}"
            )
        name, options, completion, reference = item
        options = dict(options or {})
        cls = _resolve(name)  # UnknownVerifierError for a bad name
        key = (name, repr(sorted(options.items())))
        verifier = self._instances.get(key)
        if verifier is None:
            verifier = self._instances[key] = cls(**options)
        verifier.check_reference(reference)
        # A class registered with @register_verifier exists in a worker only once its
        # module is imported there; built-ins and entry points resolve by themselves.
        module_hint = None if name in _BUILTINS else cls.__module__
        return (name, module_hint, options, completion, reference, key)

    def _dispatch(self, pending: deque, inflight: dict, requests: list, timeout: float) -> None:
        while pending:
            worker = self._checkout(block=not inflight)
            if worker is None:
                return
            index = self._pick(pending, requests, worker.slot)
            *request, key = requests[index]
            job = _Job(index, next(self._req_ids), key, timeout)
            try:
                worker.conn.send(("verify", job.req_id, *request, timeout))
            except OSError:  # died while idle (e.g. killed from outside): retry elsewhere
                pending.appendleft(index)
                self._replace(worker)
                continue
            now = time.monotonic()
            if worker.ready and key in worker.loaded:
                job.deadline = now + timeout + _KILL_GRACE_S
            else:
                job.setup_deadline = (
                    now if worker.ready else worker.started_at
                ) + self._startup_timeout_s
            inflight[worker] = job

    def _collect(self, inflight: dict, results: list, reference_errors: list) -> None:
        """Wait for the next answer or deadline; settle whatever is due."""
        now = time.monotonic()
        due = [
            job.deadline if job.deadline is not None else job.setup_deadline
            for job in inflight.values()
        ]
        by_conn = {w.conn: w for w in inflight}
        for conn in wait(list(by_conn), timeout=max(0.0, min(due) - now)):
            worker = by_conn[conn]
            job = inflight[worker]
            try:
                message = worker.conn.recv()
            except (EOFError, OSError):
                try:  # the socket closes a moment before the process is reaped
                    code = worker.proc.wait(timeout=1.0)
                except subprocess.TimeoutExpired:
                    code = None
                phase = "while verifying" if worker.ready else "while starting"
                results[job.index] = Verdict(
                    0.0,
                    False,
                    "error",
                    {"error": f"verifier worker exited {phase} (exit code {code})"},
                )
                del inflight[worker]
                self._replace(worker)
                if not worker.ready:
                    self._failed_start(f"exited with code {code}")
                continue
            if message[0] == "ready":
                worker.ready = True
                self._failed_starts = 0
                job.setup_deadline = time.monotonic() + self._startup_timeout_s  # now loading
            elif message[0] == "started" and message[1] == job.req_id:
                worker.loaded.add(job.key)
                job.deadline = time.monotonic() + job.timeout_s + _KILL_GRACE_S
            elif message[0] == "result" and message[1] == job.req_id:
                _, _, kind, payload, retire = message
                if kind == "reference_error":
                    reference_errors.append(payload)
                    payload = Verdict(0.0, False, "error", {"error": payload})
                results[job.index] = payload
                del inflight[worker]
                soft_timeout = payload == Verdict(0.0, False, "timeout")  # the worker's own
                if retire or (soft_timeout and self._retire_on_timeout):
                    self._replace(worker)
                else:
                    self._checkin(worker)
        now = time.monotonic()
        for worker, job in list(inflight.items()):
            if job.deadline is not None and now >= job.deadline:
                results[job.index] = Verdict(0.0, False, "timeout")
            elif job.deadline is None and now >= job.setup_deadline:
                phase = "load the verifier" if worker.ready else "start"
                results[job.index] = Verdict(
                    0.0,
                    False,
                    "error",
                    {"error": f"verifier worker did not {phase} within {self._startup_timeout_s}s"},
                )
                if not worker.ready:
                    del inflight[worker]
                    self._replace(worker)
                    self._failed_start(f"did not start within {self._startup_timeout_s}s")
                    continue
            else:
                continue
            del inflight[worker]
            self._replace(worker)

    def _failed_start(self, what: str) -> None:
        # One worker dying at start is bad luck; several in a row is a broken environment
        # (a preload that fails to import, no memory): every item would come back as an
        # error, i.e. a silent reward of 0. Fail loudly instead.
        self._failed_starts += 1
        if self._failed_starts >= _MAX_FAILED_STARTS:
            raise RuntimeError(
                f"verifier workers cannot start: {self._failed_starts} in a row died before "
                f"they were ready (last one {what}); their stderr says why"
            )

    def _checkout(self, block: bool) -> _Worker | None:
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeError("VerifierPool is closed")
                if self._idle:
                    # Prefer a worker known to be ready over one still starting.
                    ready = [w for w in self._idle if w.ready]
                    worker = ready[0] if ready else self._idle[0]
                    self._idle.remove(worker)
                    return worker
                if not block:
                    return None
                self._cond.wait()

    def _checkin(self, worker: _Worker) -> None:
        with self._cond:
            if self._closed:
                worker.kill()
                return
            self._idle.append(worker)
            self._cond.notify()

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        with self._cond:
            self._all.discard(worker)
            if self._closed:
                return
            self.restarts += 1
        self._checkin(self._spawn(worker.slot))

    def _pick(self, pending: deque, requests: list, slot: int) -> int:
        """The next item for the worker in ``slot``: preferably one whose reference belongs
        to that slot, so the G completions of a group meet their parsed gold answer in one
        worker's cache instead of every worker parsing it."""
        for position, index in enumerate(itertools.islice(pending, _AFFINITY_SCAN)):
            if _affinity(requests[index][4]) % self.workers == slot:  # [4]: the reference
                del pending[position]
                return index
        return pending.popleft()

    def _spawn(self, slot: int) -> _Worker:
        parent_sock, child_sock = socket.socketpair()
        env = worker_env()
        # The worker sees the caller's modules: plugins, the caller's own package.
        env["PYTHONPATH"] = os.pathsep.join(
            os.path.abspath(p) if p else os.getcwd() for p in sys.path
        )
        proc = subprocess.Popen(
            # -P: no cwd in front of sys.path; the worker's path is exactly the caller's.
            [sys.executable, "-P", "-m", "verifiers._worker", str(child_sock.fileno())],
            pass_fds=(child_sock.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=2,  # a verifier's print() must not corrupt the caller's stdout
            start_new_session=True,
            env=env,
        )
        child_sock.close()
        conn = Connection(parent_sock.detach())
        conn.send(
            {"memory_mb": self._memory_mb, "preload": self._preload, "parent_pid": os.getpid()}
        )
        worker = _Worker(proc, conn, slot)
        with self._cond:
            self._all.add(worker)
        return worker


# What a worker inherits of the caller's environment: enough to run Python, a sandbox and
# plugins, never the caller's secrets (a service's RLVR_API_TOKEN, database URL, cloud keys).
_ENV_NAMES = (
    *("PATH", "HOME", "LANG", "TZ", "TMPDIR", "VIRTUAL_ENV", "LD_LIBRARY_PATH", "RLVR_HOME"),
    *("DOCKER_HOST", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY"),  # the docker sandbox backend
)
_ENV_PREFIXES = ("LC_", "PYTHON", "RLVR_VERIFIER", "RLVR_SANDBOX")


def worker_env() -> dict[str, str]:
    """The environment a worker starts with: an allowlist of the caller's variables."""
    return {k: v for k, v in os.environ.items() if k in _ENV_NAMES or k.startswith(_ENV_PREFIXES)}


def _affinity(reference: Any) -> int:
    try:
        return hash(reference)
    except TypeError:  # a dict or list reference (countdown, code)
        return hash(repr(reference))


def _check_timeout(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{field} must be a positive number of seconds, got {value!r}")
    return float(value)


_shared: VerifierPool | None = None
_shared_lock = threading.Lock()


def shared_pool() -> VerifierPool:
    """The process-wide pool used by ``MathVerifier.verify`` and friends, created lazily.

    Its size is ``RLVR_VERIFIER_WORKERS`` or ``min(2, cpu_count)``. Closed at exit.
    """
    if _in_worker:
        raise RuntimeError("verifiers run in-process inside a pool worker: no nested pools")
    global _shared
    with _shared_lock:
        # A forked child must not share its parent's workers.
        if _shared is None or _shared._closed or _shared._pid != os.getpid():
            workers = os.environ.get("RLVR_VERIFIER_WORKERS", "")
            try:
                n = int(workers) if workers else min(2, os.cpu_count() or 1)
            except ValueError:
                raise ValueError(
                    f"RLVR_VERIFIER_WORKERS must be an integer >= 1, got {workers!r}"
                ) from None
            _shared = VerifierPool(workers=n)
            atexit.register(_shared.close)
        return _shared
