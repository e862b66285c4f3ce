"""The sandbox contract: Python code in, a :class:`RunResult` out, under :class:`Limits`.

Backends (``sandbox.local.LocalSandbox``: bubblewrap; ``sandbox.docker.DockerSandbox``)
implement :meth:`Sandbox._run`; argument checking and the bounded concurrent
:meth:`Sandbox.run_many` live here, once.
"""

from __future__ import annotations

import math
import posixpath
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields

# The name the code is stored under in the work dir; `files` may not use it.
MAIN_FILE = "main.py"


class SandboxError(RuntimeError):
    """The sandbox itself failed (not the program in it): a setup error, a dead engine."""


class SandboxUnavailable(SandboxError):
    """A backend cannot run on this machine; the message says what to install or change."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of one run. Every field must be positive.

    Attributes:
        wall_s: wall-clock seconds before the whole process tree is killed (``timed_out``).
        cpu_s: CPU seconds per process (RLIMIT_CPU); exceeding it also sets ``timed_out``.
        memory_mb: address space per process (RLIMIT_AS) and, where the cgroup tree is
            writable, the memory of the whole run (plus the work dir's tmpfs).
        pids: processes + threads the program may have (RLIMIT_NPROC; cgroup pids.max).
        output_bytes: cap on each of stdout and stderr; past it the run is killed and
            ``truncated`` is set.
        disk_mb: size of the writable work dir (``/work``, a tmpfs) and the largest file.
        open_files: RLIMIT_NOFILE.
    """

    wall_s: float = 10.0
    cpu_s: float = 10.0
    memory_mb: int = 512
    pids: int = 64
    output_bytes: int = 1_000_000
    disk_mb: int = 64
    open_files: int = 256

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(
                    f"Limits.{f.name} must be a number, got {type(value).__name__} {value!r}"
                )
            if not math.isfinite(value) or value <= 0:
                raise ValueError(
                    f"Limits.{f.name} must be a positive finite number, got {value!r}; "
                    f"e.g. Limits({f.name}={f.default!r})"
                )


@dataclass
class RunResult:
    """What one run did.

    ``exit_code`` is the program's exit status; a program killed by signal N reports
    ``128 + N`` (as a shell does) and a run the sandbox killed (wall clock, output cap)
    reports ``-9``. ``stdout``/``stderr`` are decoded as UTF-8 (invalid bytes replaced)
    and cut at ``Limits.output_bytes`` (``truncated``). ``oom`` is set when the run hit
    its memory limit (a cgroup OOM kill or a ``MemoryError``).
    """

    exit_code: int
    stdout: str
    stderr: str
    timed_out: bool = False
    oom: bool = False
    duration_s: float = 0.0
    truncated: bool = False

    @property
    def ok(self) -> bool:
        """Exited 0 on its own, within its limits."""
        return self.exit_code == 0 and not (self.timed_out or self.oom or self.truncated)


@dataclass(frozen=True)
class RunSpec:
    """One program for :meth:`Sandbox.run_many` (the arguments of :meth:`Sandbox.run_python`)."""

    code: str
    stdin: str = ""
    limits: Limits = field(default_factory=Limits)
    files: dict[str, str] | None = None


def cpu_rlimit(limits: Limits) -> int:
    """RLIMIT_CPU for ``limits.cpu_s``: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(limits.cpu_s))


def check_run_args(code: object, stdin: object, limits: object, files: object) -> None:
    """Raise ``TypeError``/``ValueError`` naming the bad argument of a run, and the fix."""
    if not isinstance(code, str):
        raise TypeError(f"code must be a str of Python source, got {type(code).__name__}")
    if not isinstance(stdin, str):
        raise TypeError(f"stdin must be a str, got {type(stdin).__name__}")
    if not isinstance(limits, Limits):
        raise TypeError(
            f"limits must be a sandbox.Limits, got {type(limits).__name__}; "
            "build one with Limits(wall_s=..., memory_mb=...)"
        )
    if files is None:
        return
    if not isinstance(files, dict):
        raise TypeError(f"files must be a dict of relative path -> str, got {type(files).__name__}")
    for name, content in files.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"files keys must be non-empty str paths, got {name!r}")
        norm = posixpath.normpath(name)
        if name.startswith("/") or norm.startswith("..") or "\0" in name:
            raise ValueError(
                f"files[{name!r}]: paths must be relative to the work dir and stay inside it"
            )
        if norm == MAIN_FILE:
            raise ValueError(f"files[{name!r}]: {MAIN_FILE!r} is reserved for the code")
        if not isinstance(content, str | bytes):
            raise TypeError(f"files[{name!r}] must be str or bytes, got {type(content).__name__}")


class Sandbox(ABC):
    """Runs untrusted Python code; at most ``concurrency`` runs at a time.

    ``run_python`` is thread-safe; calls beyond ``concurrency`` wait for a free slot.
    ``run_many`` runs a batch with exactly that bound. Use as a context manager or call
    :meth:`close` to release backend resources (cgroups, warm containers).
    """

    backend: str = ""

    def __init__(self, concurrency: int) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be an int >= 1, got {concurrency!r}")
        self.concurrency = concurrency
        self._closed = False
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (runs then raise :class:`SandboxError`)."""
        return self._closed

    def run_python(
        self,
        code: str,
        stdin: str = "",
        limits: Limits | None = None,
        files: dict[str, str] | None = None,
    ) -> RunResult:
        """Run ``code`` as ``/work/main.py`` with ``stdin`` and ``files`` in its work dir.

        Returns when the program and everything it started are gone: within
        ``limits.wall_s`` (plus teardown) at the latest. Raises ``TypeError``/``ValueError``
        for bad arguments and :class:`SandboxError` if the sandbox itself fails.
        """
        limits = Limits() if limits is None else limits
        check_run_args(code, stdin, limits, files)
        if self._closed:
            raise SandboxError(f"this {self.backend} sandbox is closed")
        return self._run(code, stdin, limits, files or {})

    def run_many(self, specs: Iterable[RunSpec]) -> list[RunResult]:
        """Run every spec, ``concurrency`` at a time; results in the order of ``specs``."""
        specs = list(specs)
        for i, spec in enumerate(specs):
            if not isinstance(spec, RunSpec):
                raise TypeError(f"run_many: item {i} must be a sandbox.RunSpec, got {spec!r}")
            check_run_args(spec.code, spec.stdin, spec.limits, spec.files)
        if self._closed:
            raise SandboxError(f"this {self.backend} sandbox is closed")
        if len(specs) == 1:
            s = specs[0]
            return [self._run(s.code, s.stdin, s.limits, s.files or {})]
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="sandbox")
        futures = [
            self._executor.submit(self._run, s.code, s.stdin, s.limits, s.files or {})
            for s in specs
        ]
        return [f.result() for f in futures]

    @abstractmethod
    def _run(self, code: str, stdin: str, limits: Limits, files: dict[str, str]) -> RunResult:
        """Run one checked program (backends implement this; it must be thread-safe)."""

    def close(self) -> None:
        """Release the worker threads (backends extend this to free their resources)."""
        with self._executor_lock:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
