"""The ``docker_engine`` session fixture: a Docker engine and the Debian base image, for the
tests marked ``docker``.

Where no engine answers, a private ``dockerd`` is started (as root, with
``deploy/engine.py``): its own socket, so that the rest of the suite (``get_sandbox("auto")``
pings the default one) runs as it would without it; images under
``/var/lib/rlvr-test-docker/data``, so that the base image (its tag carries a hash of its
recipe) is built once per machine, not once per run. It is stopped at the end of the
session, together with every container it ran. Where it cannot start (not root, no
``dockerd``), the tests that need it skip, saying why.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STATE_DIR = "/var/lib/rlvr-test-docker"


def load_engine_module():
    """``deploy/engine.py`` as a module (deploy/ is not a package)."""
    if "rlvr_deploy_engine" in sys.modules:
        return sys.modules["rlvr_deploy_engine"]
    spec = importlib.util.spec_from_file_location("rlvr_deploy_engine", REPO / "deploy/engine.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["rlvr_deploy_engine"] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class DockerEngine:
    """What the docker tests get: the engine's URL, the base image, and what each cost."""

    host: str
    base_image: str
    timings_s: dict[str, float] = field(default_factory=dict)

    def client(self):
        """A Docker SDK client of this engine (the caller closes it)."""
        import docker

        return docker.DockerClient(base_url=self.host, timeout=60)

    def env(self) -> dict[str, str]:
        """The environment for a ``docker`` CLI subprocess that talks to this engine."""
        return {**os.environ, "DOCKER_HOST": self.host}


@pytest.fixture(scope="session")
def docker_engine():
    engine_mod = load_engine_module()
    session_env = "RLVR_TEST_SESSION"  # tests/conftest.py: the leftover check's marker
    t0 = time.monotonic()
    try:
        engine = engine_mod.start_engine(STATE_DIR, env_drop=(session_env,))
    except RuntimeError as exc:
        pytest.skip(f"no Docker engine: {exc}")
    started = time.monotonic()
    try:
        image = engine_mod.build_base_image(host=engine.host)
    except RuntimeError as exc:
        engine.stop()
        pytest.skip(f"no base image: {exc}")
    timings = {"engine_start_s": started - t0, "base_image_s": time.monotonic() - started}
    print(f"\ndocker engine: {engine.host}, base image {image}, {timings}")
    yield DockerEngine(engine.host, image, timings)
    engine.stop()
