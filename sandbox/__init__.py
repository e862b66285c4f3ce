"""Run untrusted Python safely and fast: bubblewrap locally, Docker where an engine answers.

    >>> from sandbox import get_sandbox, Limits
    >>> sb = get_sandbox("auto")
    >>> sb.run_python("print(input()[::-1])", stdin="abc", limits=Limits(wall_s=2)).stdout
    'cba\\n'

``sb.run_many([RunSpec(code, stdin=...), ...])`` runs a batch, ``sb.concurrency`` at a time.
Imports neither ``rlvr`` nor ``verifiers`` (nor torch or Ray). See docs/sandbox.md.
"""

from __future__ import annotations

import threading
from typing import Any

from sandbox.base import (
    Limits,
    RunResult,
    RunSpec,
    Sandbox,
    SandboxError,
    SandboxUnavailable,
)

BACKENDS = ("auto", "local", "docker")

_shared: dict[str, Sandbox] = {}
_shared_lock = threading.Lock()


def docker_available(timeout_s: float = 2.0) -> bool:
    """Whether a Docker engine answers a ping within ``timeout_s``."""
    try:
        import docker
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=timeout_s)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # no socket, permission denied, engine down: all mean "no"
        return False


def get_sandbox(backend: str = "auto", **options: Any) -> Sandbox:
    """A sandbox of the given backend: ``"local"`` (bubblewrap), ``"docker"`` or ``"auto"``.

    ``auto`` picks docker when an engine answers, else local. Without ``options`` the
    instance is shared by the whole process (one bounded pool of slots); with options
    (e.g. ``concurrency=16``) a new one is built, which the caller should ``close()``.
    Raises ``ValueError`` for an unknown backend and :class:`SandboxUnavailable` when the
    backend cannot run here (the message says what to install).
    """
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(
            f"unknown sandbox backend {backend!r}; choose one of {', '.join(BACKENDS)}"
        )
    if backend == "auto":
        backend = "docker" if docker_available() else "local"
    if options:
        return _build(backend, options)
    with _shared_lock:
        if backend not in _shared or _shared[backend].closed:
            _shared[backend] = _build(backend, {})
        return _shared[backend]


def _build(backend: str, options: dict[str, Any]) -> Sandbox:
    if backend == "local":
        from sandbox.local import LocalSandbox

        return LocalSandbox(**options)
    from sandbox.docker import DockerSandbox

    return DockerSandbox(**options)


__all__ = [
    "BACKENDS",
    "Limits",
    "RunResult",
    "RunSpec",
    "Sandbox",
    "SandboxError",
    "SandboxUnavailable",
    "docker_available",
    "get_sandbox",
]
