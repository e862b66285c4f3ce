"""The docker backend: runs in warm, locked-down containers through the Docker SDK.

Each container is started once (``sleep infinity``) with: no network, a read-only root, a
tmpfs ``/work`` and ``/tmp``, memory (= swap) / pids / CPU limits, a non-root user, every
capability dropped, ``no-new-privileges``, the engine's default seccomp profile. A run is
one ``docker exec`` of the same boot script the local backend uses (``_boot.py``, mode
``docker``), which reads the program, its files and its stdin from the exec's stdin, sets
the rlimits and runs it. After a clean run a cleanup exec kills every process of the
sandbox user (``kill(-1, 9)``; the container's pid 1 is immune) and empties the tmpfs, and
the container goes back to the pool; after a timeout, an overflow or a failed cleanup it is
removed and replaced. Containers are keyed by the container-level limits (memory, pids,
disk), so runs with other limits get their own warm containers.

The image is a setting: ``DockerSandbox(image=...)``, else ``RLVR_SANDBOX_IMAGE``, else
``python:3.11-slim``; any image with ``python3`` and ``sleep`` will do (docs/sandbox.md says
how to build one from Debian packages without a registry). The tests start an engine of
their own where they can (``deploy/engine.py``) and run the attack suite on both backends.
"""

from __future__ import annotations

import contextlib
import marshal
import queue
import select
import signal
import socket
import struct
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sandbox import IMAGE_ENV, sandbox_image
from sandbox.base import (
    MAIN_FILE,
    Limits,
    RunResult,
    Sandbox,
    SandboxError,
    SandboxUnavailable,
    cpu_rlimit,
)

_BOOT = (Path(__file__).parent / "_boot.py").read_text()
LABEL = "rlvr.sandbox"
_HEADROOM_MB = 32
_CLEANUP = (
    "import os, shutil\n"
    "try:\n    os.kill(-1, 9)\nexcept ProcessLookupError:\n    pass\n"
    "for d in ('/work', '/tmp'):\n"
    "    for e in os.scandir(d):\n"
    "        (shutil.rmtree if e.is_dir(follow_symlinks=False) else os.unlink)(e.path)\n"
)


def container_options(
    image: str, limits: Limits, user: str = "65534:65534", cpus: float = 1.0
) -> dict[str, Any]:
    """Keyword arguments for ``client.containers.run`` of one warm sandbox container."""
    from docker.types import Ulimit

    disk = int(limits.disk_mb)
    memory = f"{int(limits.memory_mb) + 3 * disk + _HEADROOM_MB}m"  # tmpfs pages count too
    uid, _, gid = user.partition(":")
    # Owned by the sandbox user: the boot script writes the program into /work. (No
    # ``working_dir``: the engine would create /work root-owned, mode 755, over the tmpfs.)
    tmpfs = f"rw,nosuid,nodev,size={disk}m,mode=1777,uid={uid},gid={gid or uid}"
    return {
        "image": image,
        "command": ["sleep", "infinity"],
        "detach": True,
        "user": user,
        "hostname": "sandbox",
        "network_disabled": True,
        "network_mode": "none",
        "read_only": True,
        "tmpfs": {"/work": tmpfs, "/tmp": tmpfs},
        "shm_size": f"{disk}m",
        "mem_limit": memory,
        "memswap_limit": memory,  # no swap beyond the memory limit
        # + the container's `sleep`: the run (its process tree and threads) gets exactly
        # `pids` tasks, as locally. The cleanup exec needs one free: a run that leaves
        # `pids` tasks behind fails it, and its container is replaced.
        "pids_limit": int(limits.pids) + 1,
        "nano_cpus": int(cpus * 1e9),
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "ulimits": [
            Ulimit(name="nofile", soft=int(limits.open_files), hard=int(limits.open_files)),
            Ulimit(name="fsize", soft=disk << 20, hard=disk << 20),
            Ulimit(name="core", soft=0, hard=0),
        ],
        "environment": {"HOME": "/work", "LANG": "C.UTF-8"},
        "labels": {LABEL: "1"},
    }


def exec_command(python: str, limits: Limits) -> list[str]:
    """The command of one run's ``docker exec`` (the payload comes on its stdin)."""
    return [
        python,
        "-I",
        "-S",
        "-c",
        _BOOT,
        "docker",
        str(cpu_rlimit(limits)),
        str(int(limits.memory_mb) << 20),
        str(1 << 20),  # RLIMIT_NPROC counts the uid engine-wide; pids_limit bounds the run
        str(int(limits.disk_mb) << 20),
        str(int(limits.open_files)),
    ]


def payload(code: str, stdin: str, files: dict[str, str]) -> bytes:
    """The exec's stdin: program, files and stdin, ``marshal``-encoded for ``_boot.py``."""
    as_bytes = {MAIN_FILE: code.encode()}
    as_bytes.update({k: v.encode() if isinstance(v, str) else v for k, v in files.items()})
    return marshal.dumps({"files": as_bytes, "stdin": stdin.encode()})


class _Demux:
    """Splits Docker's multiplexed exec stream (8-byte headers: stream id, size) into
    stdout and stderr, each capped at ``cap`` bytes."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.buffer = b""
        self.out = {1: bytearray(), 2: bytearray()}
        self.truncated = False

    def feed(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 8:
            stream, size = struct.unpack(">BxxxL", self.buffer[:8])
            if len(self.buffer) < 8 + size:
                return
            chunk, self.buffer = self.buffer[8 : 8 + size], self.buffer[8 + size :]
            target = self.out.get(stream)
            if target is None:
                continue
            target += chunk
            if len(target) > self.cap:
                del target[self.cap :]
                self.truncated = True


class DockerSandbox(Sandbox):
    """Runs programs in warm Docker containers. See the module docstring.

    Args:
        image: an image with ``python3`` and ``sleep`` (default: ``RLVR_SANDBOX_IMAGE``,
            else ``python:3.11-slim``); it must be present (``docker pull``, or built
            locally) - the sandbox never pulls.
        concurrency: runs at the same time (= warm containers per limits profile).
        client: a ``docker.DockerClient`` (default ``docker.from_env``).
        user: uid:gid inside the containers (default nobody).
        cpus: CPU share of each container.
        python: the interpreter inside the image.
        api_timeout_s: timeout of each Docker API call.
    """

    backend = "docker"

    def __init__(
        self,
        image: str | None = None,
        concurrency: int = 4,
        client: Any = None,
        user: str = "65534:65534",
        cpus: float = 1.0,
        python: str = "python3",
        api_timeout_s: float = 30.0,
    ) -> None:
        super().__init__(concurrency)
        import docker

        image = sandbox_image(image)

        self._docker = docker
        try:
            self._client = client or docker.from_env(timeout=api_timeout_s)
            self._client.ping()
        except Exception as exc:
            raise SandboxUnavailable(
                f"no Docker engine answers ({exc}); start one or use get_sandbox('local')"
            ) from exc
        try:
            self._client.images.get(image)
        except docker.errors.ImageNotFound:
            raise SandboxUnavailable(
                f"image {image!r} is not present; run `docker pull {image}` or build one "
                f"(docs/sandbox.md) and name it with {IMAGE_ENV} or the verifier option 'image'"
            ) from None
        self.image, self.user, self.cpus, self.python = image, user, cpus, python
        # The host uid runs execute as (no user namespace remapping): what `kill -1` from a
        # run could reach if the container's pid namespace did not hold it.
        uid = user.partition(":")[0]
        self.uids = range(int(uid), int(uid) + 1) if uid.isdigit() else None
        self._slots = threading.BoundedSemaphore(concurrency)
        self._idle: dict[tuple, queue.SimpleQueue] = defaultdict(queue.SimpleQueue)
        self._all: set[Any] = set()
        self._lock = threading.Lock()
        self._reaper = ThreadPoolExecutor(2, thread_name_prefix="sandbox-docker-rm")
        self.warm(Limits())

    @staticmethod
    def _profile(limits: Limits) -> tuple:
        return (int(limits.memory_mb), int(limits.pids), int(limits.disk_mb), limits.open_files)

    def _start(self, limits: Limits) -> Any:
        options = container_options(self.image, limits, self.user, self.cpus)
        container = self._client.containers.run(**options)
        with self._lock:
            self._all.add(container)
        return container

    def _discard(self, container: Any) -> None:
        with self._lock:
            self._all.discard(container)
        self._reaper.submit(_remove, container)

    def warm(self, limits: Limits, count: int | None = None) -> None:
        """Start containers for runs with ``limits`` now (default: ``concurrency`` of them,
        less those idle already), so that those runs skip the container start (~0.5 s).

        The constructor warms the default ``Limits()``; a caller whose runs use other
        memory, pids, disk or open-files limits warms those once up front.
        """
        if self._closed:
            raise SandboxError("this docker sandbox is closed")
        idle = self._idle[self._profile(limits)]
        for _ in range(max(0, (count or self.concurrency) - idle.qsize())):
            idle.put(self._start(limits))

    def containers(self) -> list[Any]:
        """The containers of this sandbox now (idle and in use)."""
        with self._lock:
            return list(self._all)

    def _take(self, limits: Limits) -> Any:
        try:
            return self._idle[self._profile(limits)].get_nowait()
        except queue.Empty:
            return self._start(limits)

    def _run(self, code: str, stdin: str, limits: Limits, files: dict[str, str]) -> RunResult:
        with self._slots:
            container = self._take(limits)
            clean = False
            try:
                result = self._exec(container, code, stdin, limits, files)
                clean = not (result.timed_out or result.truncated or result.oom)
                clean = clean and self._cleanup(container)
                return result
            except self._docker.errors.DockerException as exc:
                raise SandboxError(f"docker: {exc}") from exc
            finally:
                if clean and not self._closed:
                    self._idle[self._profile(limits)].put(container)
                else:
                    self._discard(container)

    def _exec(self, container, code, stdin, limits, files) -> RunResult:
        api = self._client.api
        start = time.monotonic()
        exec_id = api.exec_create(
            container.id,
            exec_command(self.python, limits),
            stdin=True,
            user=self.user,
            workdir="/work",
            environment={
                "HOME": "/work",
                "LANG": "C.UTF-8",
                "PATH": "/usr/local/bin:/usr/bin:/bin",
            },
        )["Id"]
        sock = api.exec_start(exec_id, socket=True)
        raw = getattr(sock, "_sock", sock)
        demux = _Demux(int(limits.output_bytes))
        timed_out = False
        try:
            raw.sendall(payload(code, stdin, files))
            raw.shutdown(socket.SHUT_WR)
            deadline = start + limits.wall_s
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = True
                    break
                if not select.select([raw], [], [], remaining)[0]:
                    continue
                data = raw.recv(65536)
                if not data:
                    break
                demux.feed(data)
                if demux.truncated:
                    break
        finally:
            sock.close()
        if timed_out or demux.truncated:
            # The whole container is killed and removed in the background (``_discard``):
            # under load a kill takes the engine up to a second, which the caller need not
            # wait for. Its processes can reach nothing meanwhile, and use no new slot.
            exit_code = -9
        else:
            exit_code = self._exit_code(exec_id, deadline=time.monotonic() + 5.0)
        err = bytes(demux.out[2])
        oom = err.rstrip().endswith(b"MemoryError")
        if exit_code == 137 and not timed_out:
            container.reload()
            oom = oom or bool(container.attrs.get("State", {}).get("OOMKilled"))
        return RunResult(
            exit_code=exit_code,
            stdout=bytes(demux.out[1]).decode(errors="replace"),
            stderr=err.decode(errors="replace"),
            # RLIMIT_CPU's SIGXCPU (the boot script's soft limit; the wall clock is ours,
            # above). A 137 is not taken for it: the program may have killed itself.
            timed_out=timed_out or exit_code == 128 + signal.SIGXCPU,
            oom=oom,
            duration_s=time.monotonic() - start,
            truncated=demux.truncated,
        )

    def _exit_code(self, exec_id: str, deadline: float) -> int:
        while True:
            info = self._client.api.exec_inspect(exec_id)
            if not info.get("Running") and info.get("ExitCode") is not None:
                return int(info["ExitCode"])
            if time.monotonic() > deadline:
                raise SandboxError(f"docker exec {exec_id[:12]} did not report an exit code")
            time.sleep(0.01)

    def _cleanup(self, container: Any) -> bool:
        """Kill whatever the run left and empty the tmpfs; ``False`` if that failed."""
        try:
            r = container.exec_run([self.python, "-I", "-S", "-c", _CLEANUP], user=self.user)
        except self._docker.errors.DockerException:
            return False
        return r.exit_code == 0

    def close(self) -> None:
        """Remove every container of this sandbox."""
        super().close()
        self._closed = True
        with self._lock:
            containers, self._all = list(self._all), set()
        for c in containers:
            self._reaper.submit(_remove, c)
        self._reaper.shutdown(wait=True)


def _remove(container: Any) -> None:
    with contextlib.suppress(Exception):  # already gone, or the engine went away
        container.remove(force=True)
