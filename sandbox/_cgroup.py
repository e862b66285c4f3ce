"""Per-slot cgroups for the local sandbox: a memory and a pids limit over a whole run.

Rlimits bound each *process*; a fork bomb of 64 processes of 512 MB each would still eat
32 GB. A cgroup bounds the run as a whole. Each concurrent slot of a ``LocalSandbox`` owns
one cgroup (v1: one per controller; v2: one with both), created below the cgroup this
process lives in, named ``rlvr-sandbox-<pid>-<n>/slot-<k>``. A run's sandboxed process is
moved into its slot's cgroup before it execs the program (see ``LocalSandbox``), so
everything the program forks is counted.

Where the tree is not writable (no root, a read-only or undelegated cgroupfs, a v2 parent
with processes in it) :func:`make_slot_cgroups` returns ``None`` with the reason, and the
sandbox falls back to rlimits only.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re

_ROOT = "/sys/fs/cgroup"
_counter = itertools.count()


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


class SlotCgroup:
    """The cgroup(s) of one slot. ``dirs`` are the per-controller directories (v1) or one (v2)."""

    def __init__(self, dirs: dict[str, str], version: int) -> None:
        self.dirs = dirs
        self.version = version

    @property
    def procs_files(self) -> list[str]:
        """The ``cgroup.procs`` files a process writes its pid to, to join this slot."""
        return [os.path.join(d, "cgroup.procs") for d in dict.fromkeys(self.dirs.values())]

    def add(self, pid: int) -> None:
        """Move process ``pid`` into this slot (its children will be born here)."""
        for path in self.procs_files:
            _write(path, str(pid))

    def set_limits(self, memory_bytes: int, pids: int) -> None:
        mem, pid_dir = self.dirs["memory"], self.dirs["pids"]
        if self.version == 1:
            limit = os.path.join(mem, "memory.limit_in_bytes")
            memsw = os.path.join(mem, "memory.memsw.limit_in_bytes")
            if not os.path.exists(memsw):
                _write(limit, str(memory_bytes))
            else:  # memsw >= limit must hold after each write: order depends on the direction
                try:
                    _write(limit, str(memory_bytes))
                    _write(memsw, str(memory_bytes))
                except OSError:
                    _write(memsw, str(memory_bytes))
                    _write(limit, str(memory_bytes))
        else:
            _write(os.path.join(mem, "memory.max"), str(memory_bytes))
            swap = os.path.join(mem, "memory.swap.max")
            if os.path.exists(swap):
                _write(swap, "0")
        if self.has_pids:
            _write(os.path.join(pid_dir, "pids.max"), str(pids))

    @property
    def has_pids(self) -> bool:
        """Whether the pids controller is on (v2 may delegate memory alone; RLIMIT_NPROC then)."""
        return os.path.exists(os.path.join(self.dirs["pids"], "pids.max"))

    def oom_kills(self) -> int:
        """How many processes the kernel has OOM-killed in this cgroup so far."""
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        m = re.search(r"^oom_kill (\d+)", _read(os.path.join(self.dirs["memory"], name)), re.M)
        return int(m.group(1)) if m else 0

    def pids(self) -> list[int]:
        """Every process in the slot now."""
        text = _read(os.path.join(self.dirs["pids"], "cgroup.procs"))
        return [int(p) for p in text.split()]


def _own_cgroups() -> dict[str, str]:
    """controller -> this process's cgroup path; v2 under the key ``""``."""
    out = {}
    for line in _read("/proc/self/cgroup").splitlines():
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else [""]:
            out[c] = path
    return out


def _remove_tree(path: str) -> None:
    """rmdir a cgroup and its children (cgroupfs refuses recursive deletes)."""
    for sub in sorted((e.path for e in os.scandir(path) if e.is_dir()), reverse=True):
        _remove_tree(sub)
    os.rmdir(path)


def _remove_stale(parent: str) -> None:
    """Remove ``rlvr-sandbox-<pid>-*`` dirs left by processes that no longer exist."""
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return
    for e in entries:
        m = re.fullmatch(r"rlvr-sandbox-(\d+)-\d+", e.name)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            with contextlib.suppress(OSError):
                _remove_tree(e.path)


def _v2_parent(own: str) -> str | None:
    """Where slot cgroups can go on cgroup v2: a cgroup that hands the memory controller down.

    v2 forbids processes in a cgroup whose controllers are enabled for children, so our own
    cgroup qualifies only if something already enabled them there; else its parent (our
    cgroup is then a leaf, the slots its siblings). pids is enabled there too if it can be
    (a cgroup without processes of its own); without it RLIMIT_NPROC still bounds a run.
    """
    for candidate in (own, os.path.dirname(own.rstrip("/"))):
        try:
            enabled = _read(os.path.join(candidate, "cgroup.subtree_control")).split()
        except OSError:
            continue
        if "memory" not in enabled:
            continue
        if "pids" not in enabled and not _read(os.path.join(candidate, "cgroup.procs")).split():
            with contextlib.suppress(OSError):
                _write(os.path.join(candidate, "cgroup.subtree_control"), "+pids")
        return candidate
    return None


def make_slot_cgroups(n: int) -> tuple[list[SlotCgroup] | None, str]:
    """``n`` slot cgroups and ``"cgroup v1"``/``"cgroup v2"``, or ``None`` and why not."""
    own = _own_cgroups()
    name = f"rlvr-sandbox-{os.getpid()}-{next(_counter)}"
    if "memory" in own and "pids" in own:  # v1 (or hybrid with v1 controllers)
        version = 1
        parents = {c: os.path.join(_ROOT, c, own[c].lstrip("/")) for c in ("memory", "pids")}
    elif "" in own and os.path.exists(os.path.join(_ROOT, "cgroup.controllers")):
        version = 2
        parent = _v2_parent(os.path.join(_ROOT, own[""].lstrip("/")))
        if parent is None:
            return None, (
                "cgroup v2: the memory controller is not delegated next to this process's "
                "cgroup (neither it nor its parent has it in cgroup.subtree_control)"
            )
        parents = {"memory": parent, "pids": parent}
    else:
        return None, "no memory/pids cgroup controllers found"
    made: list[str] = []
    try:
        for parent in dict.fromkeys(parents.values()):
            _remove_stale(parent)
            os.mkdir(os.path.join(parent, name))
            made.append(os.path.join(parent, name))
            if version == 2:  # the new dir must hand memory (and pids) down to its slots
                available = _read(os.path.join(parent, name, "cgroup.controllers")).split()
                wanted = [f"+{c}" for c in ("memory", "pids") if c in available]
                _write(os.path.join(parent, name, "cgroup.subtree_control"), " ".join(wanted))
        slots = []
        for k in range(n):
            dirs = {c: os.path.join(p, name, f"slot-{k}") for c, p in parents.items()}
            for d in dict.fromkeys(dirs.values()):
                os.mkdir(d)
            slots.append(SlotCgroup(dirs, version))
        slots[0].set_limits(64 << 20, 8)  # fails here, not mid-run, if limits are not writable
    except OSError as exc:
        for d in made:
            with contextlib.suppress(OSError):
                _remove_tree(d)
        where = exc.filename or "a limit file"
        return None, f"cgroup v{version} tree not writable here ({exc.strerror}: {where})"
    return slots, f"cgroup v{version}"


def remove_slot_cgroups(slots: list[SlotCgroup]) -> None:
    """Remove the slots' parent dirs (call when no run is in flight)."""
    tops = {os.path.dirname(d) for s in slots for d in s.dirs.values()}
    for top in tops:
        # A process still inside keeps the dir: the next sandbox on this machine reaps it.
        with contextlib.suppress(OSError):
            _remove_tree(top)
