"""Run untrusted Python safely and fast: bubblewrap locally, Docker where an engine answers.

    >>> from sandbox import get_sandbox, Limits
    >>> sb = get_sandbox("auto")
    >>> sb.run_python("print(input()[::-1])", stdin="abc", limits=Limits(wall_s=2)).stdout
    'cba\\n'

``sb.run_many([RunSpec(code, stdin=...), ...])`` runs a batch, ``sb.concurrency`` at a time.
Imports neither ``rlvr`` nor ``verifiers`` (nor torch or Ray). See docs/sandbox.md.
"""

from __future__ import annotations

import os
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
IMAGE_ENV = "RLVR_SANDBOX_IMAGE"
ALLOWED_IMAGES_ENV = "RLVR_SANDBOX_IMAGES"  # further images a service's callers may name
DEFAULT_IMAGE = "python:3.11-slim"

_shared: dict[str, Sandbox] = {}
_shared_lock = threading.Lock()


def docker_available(timeout_s: float = 2.0, image: str | None = None) -> bool:
    """Whether a Docker engine answers a ping within ``timeout_s`` (and, given ``image``,
    has that image: the sandbox never pulls)."""
    try:
        import docker
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=timeout_s)
        try:
            if not client.ping():
                return False
            if image is not None:
                client.images.get(image)
            return True
        finally:
            client.close()
    except Exception:  # no socket, permission denied, engine down, no image: all mean "no"
        return False


def sandbox_image(image: str | None = None) -> str:
    """The docker backend's image: ``image``, else ``RLVR_SANDBOX_IMAGE``, else
    ``python:3.11-slim`` (see docs/sandbox.md for building one without a registry)."""
    return image or os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE


def allowed_images() -> list[str]:
    """The images a service lets its callers name in the code verifier's ``image`` option:
    the default (:func:`sandbox_image`) and those in ``RLVR_SANDBOX_IMAGES``
    (comma-separated). Any other image on the engine (a build stage, a database) is not the
    caller's to run code in, however locked down the container."""
    extra = [i.strip() for i in os.environ.get(ALLOWED_IMAGES_ENV, "").split(",")]
    return list(dict.fromkeys([sandbox_image(), *(i for i in extra if i)]))


def get_sandbox(backend: str = "auto", image: str | None = None, **options: Any) -> Sandbox:
    """A sandbox of the given backend: ``"local"`` (bubblewrap), ``"docker"`` or ``"auto"``.

    ``auto`` picks docker when an engine answers and has the image, else local. ``image``
    is the docker backend's image (default :func:`sandbox_image`; the local backend has
    none). Without ``options`` the instance is shared by the whole process (one bounded
    pool of slots per backend and image); with options (e.g. ``concurrency=16``) a new one
    is built, which the caller should ``close()``. Raises ``ValueError`` for an unknown
    backend and :class:`SandboxUnavailable` when the backend cannot run here (the message
    says what to install).
    """
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(
            f"unknown sandbox backend {backend!r}; choose one of {', '.join(BACKENDS)}"
        )
    if image is not None and (not isinstance(image, str) or not image):
        raise ValueError(f"image must be a non-empty str naming a Docker image, got {image!r}")
    if backend == "auto":
        backend = "docker" if docker_available(image=sandbox_image(image)) else "local"
    if backend == "docker":
        options["image"] = sandbox_image(image)
        key = f"docker:{options['image']}"
        if len(options) > 1:
            return _build(backend, options)
    else:
        key = backend
        if options:
            return _build(backend, options)
    with _shared_lock:
        if key not in _shared or _shared[key].closed:
            _shared[key] = _build(backend, options)
        return _shared[key]


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
    "sandbox_image",
]
