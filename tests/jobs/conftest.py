"""A real local Ray head with the Jobs API, shared by the runner and service tests."""

from __future__ import annotations

import os

import pytest

from rlvr.jobs.runner import LocalRayHead


@pytest.fixture(scope="session")
def ray_head():
    """``ray start --head`` on loopback with token auth, as the service starts its own."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    head = LocalRayHead(num_cpus=2, object_store_mb=512)
    head.start()
    yield head
    head.stop()


def trainer_available() -> bool:
    try:
        from rlvr.train import run  # noqa: F401
    except ImportError:
        return False
    return True


needs_trainer = pytest.mark.skipif(
    not trainer_available(), reason="rlvr.train.run is not built yet"
)
