"""The local backend: every run in a fresh bubblewrap sandbox, as an unprivileged uid.

    setpriv --reuid U ...  ->  bwrap --unshare-all --as-pid-1 --args FD ...  ->  python3 -I -S

The process joins its slot's cgroups before bubblewrap can start anything (it blocks reading
``--args FD`` until the parent has moved it), so everything the program forks is counted
and limited. The program is pid 1 of its own pid namespace: when it exits, or when a
timeout or an output overflow kills it, nothing it started survives ``run_python``.
Isolation (namespaces, mounts, seccomp, rlimits, cgroups), cleanup and what a run costs
are in docs/sandbox.md, "The local backend (bubblewrap)".
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import select
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

from sandbox import _cgroup
from sandbox._seccomp import build_filter
from sandbox.base import (
    MAIN_FILE,
    Limits,
    RunResult,
    Sandbox,
    SandboxError,
    SandboxUnavailable,
    cpu_rlimit,
)

log = logging.getLogger(__name__)

_BOOT = (Path(__file__).parent / "_boot.py").read_text()
_CHILD_PID_RE = re.compile(rb'"child-pid"\s*:\s*(\d+)')
# System directories the interpreter may need, bound read-only (symlinks recreated as such).
_SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# Small system files: copied into the sandbox's root (cheaper than a bind mount, which costs
# bubblewrap a parse of the whole mount table), or recreated if they are symlinks.
_SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/localtime")
# The only device nodes a program gets (each is a bind mount, and each mount costs).
_DEVICES = ("/dev/null", "/dev/zero", "/dev/urandom")
_CPU_KILL_FRACTION = 0.8  # a SIGKILL after >= this share of RLIMIT_CPU is taken to be it
_KILL_GRACE_S = 2.0  # how long teardown may take after a kill before we call it a failure
_HEADROOM_MB = 32  # cgroup memory beyond memory_mb and the tmpfs: bubblewrap itself
_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/work", "LANG": "C.UTF-8"}


def _world_executable(path: str) -> bool:
    """Whether a uid with no privileges can execute ``path`` (every directory searchable)."""
    real = os.path.realpath(path)
    parts = Path(real).parents
    try:
        if not os.stat(real).st_mode & stat.S_IXOTH:
            return False
        return all(os.stat(p).st_mode & stat.S_IXOTH for p in parts)
    except OSError:
        return False


def find_python() -> str:
    """The interpreter to run programs with: a system ``python3`` other uids can execute.

    ``/usr/bin/python3`` first (a real binary, ~15 ms to start), then this process's own
    interpreter if it is world-executable. Raises :class:`SandboxUnavailable` otherwise.
    """
    candidates = ["/usr/bin/python3", "/usr/local/bin/python3", sys.executable]
    for c in candidates:
        if c and os.path.exists(c) and _world_executable(c):
            return os.path.realpath(c)
    raise SandboxUnavailable(
        "no Python interpreter that an unprivileged uid can execute: tried "
        f"{', '.join(c for c in candidates if c)}; install a system Python "
        "(apt-get install python3) or pass LocalSandbox(python=/path/to/python3)"
    )


@dataclass
class _Slot:
    """One concurrent run's identity: its uid (when root) and its cgroup (when writable)."""

    index: int
    uid: int | None
    cgroup: _cgroup.SlotCgroup | None


class LocalSandbox(Sandbox):
    """Runs programs in bubblewrap on this machine. See the module docstring for the layers.

    Args:
        concurrency: slots, i.e. runs at the same time (default 8: on 2 cores the runs are
            mostly interpreter start-up, which overlaps well).
        python: interpreter path (default :func:`find_python`).
        uid_base: when running as root, slot k runs as uid ``uid_base + k`` (no passwd entry
            needed; RLIMIT_NPROC is counted per uid and ignored for root).
        cgroups: use per-slot cgroups where the tree is writable (``False``: rlimits only).
        seccomp: install the seccomp filter (needs libseccomp and ``pyseccomp``).

    ``isolation`` says what is in force here (uid switching, cgroups, seccomp); ``uids`` is
    the uid range the slots run as (``None`` when not root).
    """

    backend = "local"

    def __init__(
        self,
        concurrency: int = 8,
        python: str | None = None,
        uid_base: int = 61000,
        cgroups: bool = True,
        seccomp: bool = True,
    ) -> None:
        super().__init__(concurrency)
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise SandboxUnavailable(
                "bubblewrap (bwrap) is not installed; install it with "
                "`apt-get install bubblewrap` (or `make system-deps` as root)"
            )
        self._bwrap = bwrap
        self.python = python or find_python()
        if not _world_executable(self.python):
            raise SandboxUnavailable(
                f"interpreter {self.python} is not executable by unprivileged uids "
                "(is it under a mode-0700 home?); pass a system python3"
            )
        self._root = os.geteuid() == 0
        self._setpriv = shutil.which("setpriv") if self._root else None
        if self._root and self._setpriv is None:
            raise SandboxUnavailable("running as root needs setpriv (util-linux) to drop to a uid")

        self.isolation: dict[str, str | bool] = {"uid": "slot uids" if self._root else "own uid"}
        slot_cgroups, how = (None, "disabled")
        if cgroups and self._root:
            slot_cgroups, how = _cgroup.make_slot_cgroups(concurrency)
            if slot_cgroups is None:
                log.warning("sandbox: no cgroup limits (%s); rlimits only", how)
        self.isolation["cgroups"] = how if slot_cgroups else f"off ({how})"
        self._cgroups = slot_cgroups
        self._seccomp: bytes | None = None
        if seccomp:
            try:
                self._seccomp = build_filter()
            except (ImportError, OSError) as exc:
                log.warning("sandbox: no seccomp filter (%s)", exc)
        self.isolation["seccomp"] = self._seccomp is not None

        # The uids runs execute as (None: not root, runs keep this process's uid).
        self.uids = range(uid_base, uid_base + concurrency) if self._root else None
        self._system_args, self._copied_files = self._system_mounts()
        self._mount_proc = True
        self.isolation["proc"] = "own pid namespace"
        self._disable_userns = True
        self.isolation["nested_userns"] = "disabled (--disable-userns) and refused by seccomp"
        self._free: queue.Queue[_Slot] = queue.Queue()
        for k in range(concurrency):
            uid = uid_base + k if self._root else None
            self._free.put(_Slot(k, uid, slot_cgroups[k] if slot_cgroups else None))
        self._close_lock = threading.Lock()
        if slot_cgroups:
            self._finalizer = weakref.finalize(self, _cgroup.remove_slot_cgroups, slot_cgroups)
        self._self_test()

    # ---------------------------------------------------------------- construction helpers

    def _system_mounts(self) -> tuple[list[str], list[str]]:
        """bubblewrap arguments for the read-only system, and the files to copy per run."""
        args: list[str] = []
        for p in _SYSTEM_PATHS:
            if os.path.islink(p):
                args += ["--symlink", os.readlink(p), p]
            elif os.path.isdir(p):
                args += ["--ro-bind", p, p]
        # An interpreter outside /usr (e.g. /opt/python3.12/bin/python3): bind its prefix.
        prefix = str(Path(self.python).parent.parent)
        if not any(prefix == p or prefix.startswith(p + "/") for p in _SYSTEM_PATHS):
            args += ["--ro-bind", prefix, prefix]
        copied = []
        for p in _SYSTEM_FILES:
            if os.path.islink(p):
                args += ["--symlink", os.readlink(p), p]
            elif os.path.isfile(p):
                copied.append(p)
        for dev in _DEVICES:
            args += ["--dev-bind", dev, dev]
        for i, name in enumerate(("stdin", "stdout", "stderr")):
            args += ["--symlink", f"/proc/self/fd/{i}", f"/dev/{name}"]
        args += ["--symlink", "/proc/self/fd", "/dev/fd"]
        return args, copied

    def _self_test(self) -> None:
        """Run one program now, so that a machine that cannot sandbox says so at once.

        Inside a container whose ``/proc`` is masked (Docker's default) the kernel refuses a
        fresh procfs; runs then get no ``/proc`` at all rather than the host's.
        """
        while True:
            try:
                r = self._run("print('ok')", "", Limits(wall_s=10), {})
                if r.stdout.strip() == "ok":
                    return
                error = f"exit {r.exit_code}: {r.stderr.strip()[:500]}"
            except SandboxError as exc:
                error = str(exc)
            if self._mount_proc and "mount proc" in error:
                log.warning("sandbox: cannot mount a private /proc here; runs get none (%s)", error)
                self._mount_proc = False
                self.isolation["proc"] = "none (masked /proc; see docs/sandbox.md)"
                continue
            # In a container /proc/sys is read-only, and without a private /proc bubblewrap
            # cannot set the sandbox's user-namespace limit to 1. The seccomp filter refuses
            # unshare, setns and namespace clones anyway: with it, go on without the limit.
            if self._disable_userns and "max_user_namespaces" in error and self._seccomp:
                log.warning(
                    "sandbox: /proc/sys is read-only; nested user namespaces are "
                    "refused by seccomp alone (%s)",
                    error,
                )
                self._disable_userns = False
                self.isolation["nested_userns"] = "refused by seccomp (read-only /proc/sys)"
                continue
            raise SandboxUnavailable(
                f"the bubblewrap sandbox does not work here ({error}). Unprivileged user "
                "namespaces must be enabled (sysctl user.max_user_namespaces > 0); inside "
                "Docker the container needs --security-opt seccomp=unconfined "
                "--security-opt apparmor=unconfined (see docs/sandbox.md)"
            )

    # ------------------------------------------------------------------------- one run

    def _argv(self, slot: _Slot, limits: Limits, fds: _RunFds) -> list[str]:
        disk = int(limits.disk_mb) << 20
        argv: list[str] = []
        if slot.uid is not None:
            assert self._setpriv is not None  # slot uids exist only as root, which needs setpriv
            argv += [self._setpriv, f"--reuid={slot.uid}", f"--regid={slot.uid}", "--clear-groups"]
        argv += [self._bwrap, "--unshare-all", "--unshare-user"]
        argv += ["--disable-userns"] if self._disable_userns else []
        argv += ["--die-with-parent", "--new-session", "--as-pid-1", "--cap-drop", "ALL"]
        argv += ["--hostname", "sandbox", *self._system_args]
        for path, fd in fds.system_files.items():
            argv += ["--file", str(fd), path]
        if self._mount_proc:
            argv += ["--proc", "/proc"]
        for mountpoint in ("/dev/shm", "/tmp", "/work"):
            argv += ["--size", str(disk), "--tmpfs", mountpoint]
        for d in sorted({os.path.dirname(n) for n in fds.files} - {""}):
            parts = d.split("/")
            for i in range(1, len(parts) + 1):
                argv += ["--dir", "/work/" + "/".join(parts[:i])]
        for name, fd in fds.files.items():
            argv += ["--perms", "0644", "--file", str(fd), f"/work/{name}"]
        # The program itself comes through this pipe, written once the outer process is in
        # its cgroup: bubblewrap reads it to EOF before it does anything else.
        argv += ["--args", str(fds.args_r)]
        argv += ["--remount-ro", "/", "--chdir", "/work", "--clearenv"]
        for var, value in _ENV.items():
            argv += ["--setenv", var, value]
        argv += ["--json-status-fd", str(fds.status_w)]
        if fds.seccomp is not None:
            argv += ["--seccomp", str(fds.seccomp)]
        argv += ["--", self.python, "-I", "-S", "-c", _BOOT, "local"]
        argv += [
            str(cpu_rlimit(limits)),
            str(int(limits.memory_mb) << 20),
            str(int(limits.pids)),
            str(disk),
            str(int(limits.open_files)),
        ]
        return argv

    def _run(self, code: str, stdin: str, limits: Limits, files: dict[str, str]) -> RunResult:
        while True:  # wait for a free slot, but not on a sandbox closed meanwhile
            try:
                slot = self._free.get(timeout=0.5)
                break
            except queue.Empty:
                if self._closed:
                    raise SandboxError("this local sandbox is closed") from None
        try:
            return self._run_in_slot(slot, code, stdin, limits, files)
        finally:
            self._free.put(slot)

    def _run_in_slot(
        self, slot: _Slot, code: str, stdin: str, limits: Limits, files: dict[str, str]
    ) -> RunResult:
        oom_before = 0
        if slot.cgroup is not None:
            tmpfs_mb = 3 * int(limits.disk_mb)  # tmpfs pages are charged to the writer's cgroup
            slot.cgroup.set_limits(
                (int(limits.memory_mb) + tmpfs_mb + _HEADROOM_MB) << 20,
                int(limits.pids) + 1,  # +1: the outer bubblewrap
            )
            oom_before = slot.cgroup.oom_kills()
        fds = _RunFds(code, stdin, files, self._seccomp, self._copied_files)
        try:
            argv = self._argv(slot, limits, fds)
            start = time.monotonic()
            try:
                proc = subprocess.Popen(
                    argv,
                    stdin=fds.stdin,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    pass_fds=fds.passed(),
                    env={},
                    start_new_session=True,
                )
            except OSError as exc:  # e.g. EAGAIN: this machine is out of processes
                raise SandboxError(f"cannot start the sandbox: {exc}") from exc
            try:
                fds.close_passed()  # the child has its copies; ours would keep pipes open
                if slot.cgroup is not None:
                    _join_cgroup(proc.pid, slot.cgroup)
                fds.send_program()
                out, err, timed_out, truncated = _collect(proc, limits, start)
            except BaseException:  # e.g. a caller's SIGALRM: never leave the run behind
                _kill_and_reap(proc, slot, fds.read_status(block=False))
                raise
            killed = timed_out or truncated
            if killed:
                _kill_and_reap(proc, slot, fds.read_status(block=False))
                exit_code, cpu_s = -signal.SIGKILL, 0.0
            else:
                exit_code, cpu_s = _reap(proc)
                fds.read_status(block=True)  # bubblewrap, the only writer, is gone
            duration = time.monotonic() - start
        finally:
            fds.close_all()
        if not killed and not _CHILD_PID_RE.search(fds.status):
            # bubblewrap never started the program: a setup failure, not the program's doing.
            raise SandboxError(
                f"sandbox failed to start (exit {exit_code}): {err.decode(errors='replace')[:500]}"
            )
        oom = slot.cgroup is not None and slot.cgroup.oom_kills() > oom_before
        oom = oom or err.rstrip().endswith(b"MemoryError")
        # RLIMIT_CPU's SIGKILL. The kernel enforces it on its own CPU clock, and the rusage
        # that wait4 reports for the killed program has come back as low as 0.94 x the limit
        # on this VM under load (13 concurrent runs on 2 cores), hence the margin.
        if (
            exit_code == 128 + signal.SIGKILL
            and not oom
            and cpu_s >= _CPU_KILL_FRACTION * cpu_rlimit(limits)
        ):
            timed_out = True
        return RunResult(
            exit_code=exit_code,
            stdout=out.decode(errors="replace"),
            stderr=err.decode(errors="replace"),
            timed_out=timed_out,
            oom=oom,
            duration_s=duration,
            truncated=truncated,
        )

    def close(self) -> None:
        """Remove the slot cgroups (after waiting for runs in flight)."""
        super().close()
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        for _ in range(self.concurrency):  # take every slot: no run is in flight after this
            self._free.get()
        if self._cgroups:
            self._finalizer()


def _join_cgroup(pid: int, cgroup: _cgroup.SlotCgroup) -> None:
    """Move the run's outer process into the slot's cgroups, so that everything it will
    start is counted there. It is still waiting for its arguments: it has started nothing.

    Raises :class:`SandboxError` if the process is gone or the cgroup refuses it.
    """
    try:
        cgroup.add(pid)
    except OSError as exc:
        raise SandboxError(f"cannot move the sandbox {pid} into its cgroup: {exc}") from exc


class _RunFds:
    """The file descriptors of one run: stdin, code and files as memfds, seccomp, the system
    files to copy, the status pipe (bubblewrap -> us) and the arguments pipe (us -> it).

    Everything is created close-on-exec; ``Popen(pass_fds=...)`` hands exactly the child's
    ends to it, so a concurrent run in another thread never inherits them.
    """

    def __init__(
        self,
        code: str,
        stdin: str,
        files: dict[str, str],
        seccomp: bytes | None,
        system_files: list[str],
    ):
        self._all: list[int] = []
        self.stdin = self._memfd(stdin.encode())
        self.code = self._memfd(code.encode())
        self.files = {
            name: self._memfd(data.encode() if isinstance(data, str) else data)
            for name, data in files.items()
        }
        self.seccomp = self._memfd(seccomp) if seccomp is not None else None
        self.system_files = {
            p: self._keep(os.open(p, os.O_RDONLY | os.O_CLOEXEC)) for p in system_files
        }
        self.status_r, self.status_w = (self._keep(fd) for fd in os.pipe())
        self.args_r, self.args_w = (self._keep(fd) for fd in os.pipe())
        self._ours = {self.status_r, self.args_w}  # the parent's ends: kept after the spawn
        self.status = b""  # what bubblewrap wrote on the status pipe so far

    def _keep(self, fd: int) -> int:
        self._all.append(fd)
        return fd

    def _memfd(self, data: bytes) -> int:
        fd = self._keep(os.memfd_create("sandbox"))
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
        return fd

    def passed(self) -> list[int]:
        return [fd for fd in self._all if fd not in self._ours and fd != self.stdin]

    def close_passed(self) -> None:
        for fd in self._all:
            if fd not in self._ours:
                os.close(fd)
        self._all = [fd for fd in self._all if fd in self._ours]

    def send_program(self) -> None:
        """Write the arguments that put the program in ``/work`` and close the pipe, which
        lets bubblewrap go on. Without them (a parent that died first) nothing would run."""
        args = ["--perms", "0644", "--file", str(self.code), f"/work/{MAIN_FILE}"]
        with contextlib.suppress(OSError):  # EPIPE: bubblewrap has exited already
            os.write(self.args_w, b"\0".join(a.encode() for a in args) + b"\0")  # < PIPE_BUF
        os.close(self.args_w)
        self._all.remove(self.args_w)
        self._ours.discard(self.args_w)

    def read_status(self, block: bool) -> bytes:
        """Read more of bubblewrap's JSON status lines (``block=False``: what is there now);
        returns all of them so far (also in ``status``)."""
        os.set_blocking(self.status_r, block)
        try:
            while chunk := os.read(self.status_r, 65536):
                self.status += chunk
        except BlockingIOError:
            pass
        return self.status

    def close_all(self) -> None:
        for fd in self._all:
            os.close(fd)
        self._all = []
        self._ours = set()


def _collect(
    proc: subprocess.Popen, limits: Limits, start: float
) -> tuple[bytes, bytes, bool, bool]:
    """Read stdout/stderr until both close and the process exits, or until a limit is hit.

    Returns (stdout, stderr, timed_out, truncated). Each stream keeps at most
    ``limits.output_bytes``; one more byte ends the run (the output is wrong anyway).
    """
    cap = int(limits.output_bytes)
    deadline = start + limits.wall_s
    assert proc.stdout is not None and proc.stderr is not None  # started with PIPEs
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    bufs = {out_fd: bytearray(), err_fd: bytearray()}
    exited = os.pidfd_open(proc.pid)  # readable once the process exits (it is not reaped)
    poller = select.poll()
    for fd in (out_fd, err_fd, exited):
        poller.register(fd, select.POLLIN)
    waiting = {out_fd, err_fd, exited}
    timed_out = truncated = False
    try:
        while waiting and not truncated:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            for fd, _ in poller.poll(remaining * 1000):
                chunk = os.read(fd, 65536) if fd != exited else b""
                if not chunk:
                    poller.unregister(fd)
                    waiting.discard(fd)
                    continue
                bufs[fd] += chunk
                if len(bufs[fd]) > cap:
                    del bufs[fd][cap:]
                    truncated = True
    finally:
        os.close(exited)
        proc.stdout.close()
        proc.stderr.close()
    return bytes(bufs[out_fd]), bytes(bufs[err_fd]), timed_out, truncated


def _kill_and_reap(proc: subprocess.Popen, slot: _Slot, status: bytes) -> None:
    """SIGKILL a run and wait until none of its processes is left.

    The namespace's init goes first (bubblewrap's first status line names it; the program
    cannot write there): the kernel then kills the rest of the pid namespace, and the outer
    bubblewrap reaps the init and exits, leaving no orphan. Everything in the slot's cgroup
    is killed too; the outer process last, if it has not exited by then.
    """
    m = _CHILD_PID_RE.search(status)
    init_pid = int(m.group(1)) if m else None
    inner = [init_pid] if init_pid else []
    if slot.cgroup is not None:
        inner += [p for p in slot.cgroup.pids() if p != proc.pid]
    for pid in inner or [proc.pid]:
        _signal(pid)
    exited = os.pidfd_open(proc.pid)
    try:
        if not select.select([exited], [], [], _KILL_GRACE_S)[0]:
            _signal(proc.pid)
    finally:
        os.close(exited)
    _reap(proc)
    deadline = time.monotonic() + _KILL_GRACE_S
    while True:
        left = slot.cgroup.pids() if slot.cgroup is not None else []
        left += [init_pid] if init_pid is not None and _alive(init_pid) else []
        if not left:
            return
        if time.monotonic() > deadline:
            raise SandboxError(f"sandbox processes {left} survived SIGKILL for {_KILL_GRACE_S}s")
        for pid in left:
            _signal(pid)
        time.sleep(0.002)


def _alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _signal(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def _reap(proc: subprocess.Popen) -> tuple[int, float]:
    """Wait for the outer process: (exit code, shell style; CPU seconds of the whole tree)."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
    return code, usage.ru_utime + usage.ru_stime
