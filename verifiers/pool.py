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
import mmap
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
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
# The most items one message to a worker carries.
_MAX_BATCH = 64
# Weight of the newest batch in the pool's running measure of an item's verification time.
_EWMA = 0.3

# A worker's progress board: shared memory it rewrites as it begins each item of a batch
# (or loads the verifier for it), so the caller can time every item from its own start
# without a message per item: (req_id, position in the batch, phase, time.monotonic()).
_BOARD = struct.Struct("<qqqd")
_LOADING, _VERIFYING = 1, 2

_in_worker = False  # set by verifiers._worker in worker processes


def in_worker() -> bool:
    """True inside a pool worker: verifiers then run in-process (no nested pools)."""
    return _in_worker


class _Worker:
    """One worker process, the parent's end of its socket, and its progress board."""

    def __init__(self, proc: subprocess.Popen, conn: Connection, board: mmap.mmap, slot: int):
        self.proc = proc
        self.conn = conn
        self.board = board  # what the worker is doing now (written by it; see _BOARD)
        self.slot = slot  # which share of the references it prefers (kept by a replacement)
        self.ready = False  # set when the worker has said it finished starting
        self.started_at = time.monotonic()

    def read_board(self) -> tuple[int, int, int, float]:
        """(req_id, position in that batch, phase, monotonic time the phase began)."""
        return _BOARD.unpack_from(self.board)

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
        self.board.close()


@dataclass
class _Batch:
    """Items sent to one worker in one message; it runs them in order."""

    indices: list[int]  # positions in the caller's items, in the order sent
    req_id: int  # guards against a late answer to an earlier request
    timeout_s: float
    sent_at: float
    deadline: float  # when to look at the worker's board next
    # The board as last read: a deadline expires only on a value read twice, so a board
    # read halfway through the worker's write can never get a healthy worker killed.
    seen: tuple | None = None


@dataclass
class _Call:
    """One ``verify_many`` call's state."""

    requests: list[tuple]
    slots: list[int]  # the worker slot each item's reference prefers
    timeout_s: float
    results: list[Verdict | None]
    pending: deque[int]
    inflight: dict[_Worker, _Batch] = field(default_factory=dict)
    reference_errors: list[str] = field(default_factory=list)
    # Set when a worker died or stalled before beginning a batch: nothing says which item
    # did it, so the rest of the call goes one item per message and the culprit gets the
    # error alone.
    one_at_a_time: bool = False


class VerifierPool:
    """Runs verifiers in worker processes with a hard per-item timeout.

    Args:
        workers: number of worker processes (each one core when busy).
        timeout_s: default per-item limit, counted from when a ready worker (with the
            verifier loaded) starts the item.
        memory_mb: address-space limit of each worker (``RLIMIT_AS``), so a runaway
            expression raises ``MemoryError`` instead of swapping the machine; ``None``
            for no limit.
        startup_timeout_s: how long a starting worker may take to import its verifiers.
        preload: modules imported (and warmed up, via their ``_warm_up()`` if any) by
            each worker before it reports ready, so the first item is not slow.
        retire_on_timeout: replace a worker whose item ran out of time even when it
            recovered by itself, so that nothing the item started (sandbox runs in other
            threads) outlives it; the API's pool sets it.
        batch_s: how much verification time one message to a worker carries, by the
            pool's running measure of its items (cheap items travel many to a message,
            slow ones one by one; the first items of a pool go one by one); ``0`` sends
            every item alone. Batching changes no verdict and no item's time limit.

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
        batch_s: float = 0.02,
    ):
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"VerifierPool(workers=...) must be an integer >= 1, got {workers!r}")
        _check_timeout(timeout_s, "timeout_s")
        _check_timeout(startup_timeout_s, "startup_timeout_s")
        if isinstance(batch_s, bool) or not isinstance(batch_s, int | float) or batch_s < 0:
            raise ValueError(f"batch_s must be a number of seconds >= 0, got {batch_s!r}")
        self.workers = workers
        self.timeout_s = float(timeout_s)
        self.batch_s = float(batch_s)
        self._memory_mb = memory_mb
        self._startup_timeout_s = float(startup_timeout_s)
        self._preload = list(preload)
        self._retire_on_timeout = retire_on_timeout
        self._pid = os.getpid()
        self._cond = threading.Condition()
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self._closed = False
        self._req_ids = itertools.count(1)  # 0 is a fresh board's: "no batch begun"
        self._instances: dict[tuple[str, str], Verifier] = {}
        self._item_s: float | None = None  # running measure of one item's verification time
        self.restarts = 0  # workers killed (timeout) or lost (crash) and replaced
        self.messages = 0  # batches sent to workers (for monitoring and tests)
        self.duplicates = 0  # items answered by an identical item's verdict
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
        {"error": ...})``, and the worker is killed and replaced (the other items it held
        run again elsewhere). Raises for caller errors: an unknown verifier name
        (``UnknownVerifierError``, before anything runs), bad options
        (``TypeError``/``ValueError``), a malformed reference (``BadReferenceError``;
        checked up front where the verifier can, else after the batch has finished); and
        ``RuntimeError`` when workers cannot start at all (several in a row die before
        they are ready), rather than scoring everything 0.
        """
        timeout = self.timeout_s if timeout_s is None else _check_timeout(timeout_s, "timeout_s")
        # identical items of a deterministic verifier are verified once (``where``: the
        # request that answers each item)
        requests: list[tuple] = []
        where: list[int] = []
        first: dict[tuple, int] = {}
        for i, item in enumerate(items):
            request, key = self._prepare(i, item)
            j = first.get(key) if key is not None else None
            if j is None:
                j = len(requests)
                requests.append(request)
                if key is not None:
                    first[key] = j
            where.append(j)
        self.duplicates += len(items) - len(requests)
        call = _Call(
            requests=requests,
            slots=[_affinity(r[4]) % self.workers for r in requests],  # [4]: the reference
            timeout_s=timeout,
            results=[None] * len(requests),
            pending=deque(range(len(requests))),
        )
        try:
            while call.pending or call.inflight:
                self._dispatch(call)
                self._collect(call)
        finally:
            # Only reached with work in flight if the caller was interrupted: those
            # workers would answer a request nobody waits for, so replace them.
            for worker in list(call.inflight):
                self._replace(worker)
        if call.reference_errors:
            raise BadReferenceError(call.reference_errors[0])
        return [call.results[j] for j in where]  # type: ignore[misc]

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
                w.board.close()
            except (OSError, subprocess.TimeoutExpired):
                w.kill()

    def __enter__(self) -> VerifierPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- internals

    def _prepare(self, index: int, item: Any) -> tuple[tuple, tuple | None]:
        """Validate one item in the caller (cheap checks only); its request, and the key
        under which identical items share a verdict (None: a verifier that is not
        ``deterministic``, every item verified)."""
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
        request = (name, module_hint, options, completion, reference)
        if not cls.deterministic:
            return request, None
        return request, (*key, completion, _reference_key(reference))

    def _batch_size(self, call: _Call) -> int:
        """How many items the next message carries: ``batch_s`` of measured work, and no
        more than a share of what is left, so that every worker gets some of it."""
        if call.one_at_a_time or self.batch_s <= 0 or self._item_s is None:
            return 1
        by_time = int(self.batch_s / max(self._item_s, 1e-6))
        share = -(-len(call.pending) // (2 * self.workers))
        return max(1, min(_MAX_BATCH, by_time, share))

    def _take(self, call: _Call, slot: int, size: int) -> list[int]:
        """Up to ``size`` pending items for the worker in ``slot``: preferably those whose
        reference belongs to that slot, so the G completions of a group meet their parsed
        gold answer in one worker's cache instead of every worker parsing it."""
        pending = call.pending
        window = [pending.popleft() for _ in range(min(len(pending), _AFFINITY_SCAN))]
        taken = [i for i in window if call.slots[i] == slot][:size]
        chosen = set(taken)
        rest = [i for i in window if i not in chosen]
        if len(taken) < size:
            fill = size - len(taken)
            taken += rest[:fill]
            rest = rest[fill:]
        pending.extendleft(reversed(rest))
        return taken

    def _dispatch(self, call: _Call) -> None:
        while call.pending:
            worker = self._checkout(block=not call.inflight)
            if worker is None:
                return
            indices = self._take(call, worker.slot, self._batch_size(call))
            req_id = next(self._req_ids)
            try:
                worker.conn.send(
                    ("verify", req_id, call.timeout_s, [call.requests[i] for i in indices])
                )
            except OSError:  # died while idle (e.g. killed from outside): retry elsewhere
                call.pending.extendleft(reversed(indices))
                self._replace(worker)
                continue
            self.messages += 1
            now = time.monotonic()
            batch = _Batch(indices, req_id, call.timeout_s, now, deadline=0.0)
            batch.deadline = self._deadline(worker, batch, None)
            call.inflight[worker] = batch

    def _deadline(self, worker: _Worker, batch: _Batch, board: tuple | None) -> float:
        """When the worker holding ``batch`` is overdue, judging by its ``board``. Every
        item's clock starts when the worker begins it (read from the board), so an item
        deep in a batch gets its full ``timeout_s``; loading a verifier gets the startup
        allowance instead."""
        if not worker.ready:
            return worker.started_at + self._startup_timeout_s
        grace = batch.timeout_s + _KILL_GRACE_S
        if board is None:  # not read yet: no item of the batch can have begun sooner
            return batch.sent_at + grace
        req_id, _, phase, began = board
        if req_id != batch.req_id:  # has not begun the batch yet
            return batch.sent_at + self._startup_timeout_s
        if phase == _LOADING:
            return began + self._startup_timeout_s
        return began + grace

    def _collect(self, call: _Call) -> None:
        """Wait for the next answer or deadline; settle whatever is due."""
        now = time.monotonic()
        soonest = min(batch.deadline for batch in call.inflight.values())
        by_conn: dict[Any, _Worker] = {w.conn: w for w in call.inflight}
        for conn in wait(list(by_conn), timeout=max(0.0, soonest - now)):
            worker = by_conn[conn]
            batch = call.inflight[worker]
            try:
                message = worker.conn.recv()
            except (EOFError, OSError):
                try:  # the socket closes a moment before the process is reaped
                    code = worker.proc.wait(timeout=1.0)
                except subprocess.TimeoutExpired:
                    code = None
                if worker.ready:
                    self._fail(call, worker, "exited", f"exit code {code}")
                else:
                    self._requeue(call, worker, batch.indices)
                    self._failed_start(f"exited with code {code}")
                continue
            if message[0] == "ready":
                worker.ready = True
                self._failed_starts = 0
                batch.sent_at = time.monotonic()  # it begins the batch now
                batch.seen = None
                batch.deadline = self._deadline(worker, batch, None)
            elif message[0] == "results" and message[1] == batch.req_id:
                _, _, verdicts, retire, busy_s = message
                for index, (kind, payload) in zip(batch.indices, verdicts, strict=False):
                    if kind == "reference_error":
                        call.reference_errors.append(payload)
                        payload = Verdict(0.0, False, "error", {"error": payload})
                    call.results[index] = payload
                if verdicts:
                    self._measure(busy_s / len(verdicts))
                del call.inflight[worker]
                # A worker that retired midway ran only part of the batch.
                call.pending.extendleft(reversed(batch.indices[len(verdicts) :]))
                if retire:
                    self._replace(worker)
                else:
                    self._checkin(worker)
        now = time.monotonic()
        for worker, batch in list(call.inflight.items()):
            if now < batch.deadline:
                continue
            if not worker.ready:  # never started: none of the items was tried
                self._requeue(call, worker, batch.indices)
                self._failed_start(f"did not start within {self._startup_timeout_s}s")
                continue
            board = worker.read_board()
            if board != batch.seen:  # moved on since the deadline was set: a new one
                batch.seen = board
                batch.deadline = self._deadline(worker, batch, board)
                continue
            self._fail(call, worker, "timed out", f"within {self._startup_timeout_s}s")

    def _fail(self, call: _Call, worker: _Worker, what: str, detail: str) -> None:
        """``worker`` died (``what`` = "exited") or is overdue ("timed out") with a batch:
        the item it was on gets the verdict, the rest run again elsewhere."""
        batch = call.inflight[worker]
        req_id, position, phase, _ = worker.read_board()
        if req_id == batch.req_id:
            index = batch.indices[position]
            if what == "timed out" and phase == _VERIFYING:
                call.results[index] = Verdict(0.0, False, "timeout")
            elif what == "timed out":
                error = f"verifier worker did not load the verifier {detail}"
                call.results[index] = Verdict(0.0, False, "error", {"error": error})
            else:
                doing = "while verifying" if phase == _VERIFYING else "while loading the verifier"
                error = f"verifier worker exited {doing} ({detail})"
                call.results[index] = Verdict(0.0, False, "error", {"error": error})
            self._requeue(call, worker, [i for i in batch.indices if i != index])
        elif len(batch.indices) == 1:  # it never began the one item it had: that item
            error = (
                f"verifier worker exited before verifying ({detail})"
                if what == "exited"
                else f"verifier worker did not begin verifying {detail}"
            )
            call.results[batch.indices[0]] = Verdict(0.0, False, "error", {"error": error})
            self._requeue(call, worker, [])
        else:  # never began a batch: which item did it is unknown, so one by one from now
            call.one_at_a_time = True
            self._requeue(call, worker, batch.indices)

    def _requeue(self, call: _Call, worker: _Worker, indices: list[int]) -> None:
        """Give ``indices`` back to the call and replace ``worker`` (its answers are lost)."""
        del call.inflight[worker]
        call.pending.extendleft(reversed(indices))
        self._replace(worker)

    def _measure(self, item_s: float) -> None:
        previous = self._item_s
        self._item_s = item_s if previous is None else previous + _EWMA * (item_s - previous)

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

    def _spawn(self, slot: int) -> _Worker:
        parent_sock, child_sock = socket.socketpair()
        board_fd = _board_fd()
        env = worker_env()
        # The worker sees the caller's modules: plugins, the caller's own package.
        env["PYTHONPATH"] = os.pathsep.join(
            os.path.abspath(p) if p else os.getcwd() for p in sys.path
        )
        try:
            board = mmap.mmap(board_fd, _BOARD.size)
            proc = subprocess.Popen(
                # -P: no cwd in front of sys.path; the worker's path is exactly the caller's.
                [sys.executable, "-P", "-m", "verifiers._worker", str(child_sock.fileno()),
                 str(board_fd)],
                pass_fds=(child_sock.fileno(), board_fd),
                stdin=subprocess.DEVNULL,
                stdout=2,  # a verifier's print() must not corrupt the caller's stdout
                start_new_session=True,
                env=env,
            )  # fmt: skip
        finally:
            child_sock.close()
            os.close(board_fd)
        conn = Connection(parent_sock.detach())
        conn.send(
            {
                "memory_mb": self._memory_mb,
                "preload": self._preload,
                "parent_pid": os.getpid(),
                "retire_on_timeout": self._retire_on_timeout,
            }
        )
        worker = _Worker(proc, conn, board, slot)
        with self._cond:
            self._all.add(worker)
        return worker


def _board_fd() -> int:
    """A file descriptor of ``_BOARD.size`` zeroed bytes that parent and worker both map."""
    if hasattr(os, "memfd_create"):  # Linux: no file anywhere
        fd = os.memfd_create("rlvr-verifier-board")
    else:
        with tempfile.TemporaryFile() as f:
            fd = os.dup(f.fileno())
    os.ftruncate(fd, _BOARD.size)
    return fd


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


def _reference_key(reference: Any) -> tuple[str, Any]:
    """A reference as a dict key: its type too (1, 1.0 and True are equal keys but not the
    same reference), and its repr where it is a dict or list."""
    try:
        hash(reference)
    except TypeError:
        return type(reference).__name__, repr(reference)
    return type(reference).__name__, reference


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
