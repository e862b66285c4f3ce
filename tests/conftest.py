"""Shared fixtures: one small local Ray cluster per test session, GPU/docker skips."""

from __future__ import annotations

import os

import pytest


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs CUDA (runs on the lent GPU machine)")
    has_cuda = _has_cuda()
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster shared by the tests that need one (2 CPUs, no dashboard)."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=256 * 1024 * 1024,
            log_to_driver=False,
        )
    yield ray
    ray.shutdown()


# -- the service's tests (tests/jobs, tests/browser): a Ray head with the Jobs API ----------
@pytest.fixture(scope="session")
def ray_head():
    """``ray start --head`` on loopback with token auth, as the service starts its own."""
    from rlvr.jobs.runner import LocalRayHead

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    head = LocalRayHead(num_cpus=2, object_store_mb=512)
    head.start()
    yield head
    head.stop()


@pytest.fixture(scope="session")
def model_root(tmp_path_factory):
    """A model root holding a random-weight tiny:arithmetic model (seconds to build)."""
    from rlvr.models.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("models")
    build_tiny_model("arithmetic", root / "arith", warm_start=False)
    return root


@pytest.fixture(scope="session")
def tiny_spec(model_root):
    """``tiny_spec(name=..., max_steps=...)``: a job spec dict for the prebuilt tiny model."""
    return lambda **kw: make_tiny_spec(model_root / "arith", **kw)


def make_tiny_spec(
    model_dir,
    *,
    name: str = "svc",
    max_steps: int = 4,
    every: int = 2,
    max_new_tokens: int = 16,
    **algorithm,
) -> dict:
    """A training job small enough for a test: 2 prompts x 2 completions of 16 tokens."""
    return {
        "name": name,
        "model": {"path": str(model_dir)},
        "data": {"train": "builtin:arithmetic?n=64", "eval": "builtin:arithmetic?n=16&seed=1"},
        "reward": {
            "verifiers": [{"name": "math"}, {"name": "think_format", "weight": 0.1}],
            "workers": 1,
        },  # fmt: skip
        "algorithm": {
            "group_size": 2,
            "prompts_per_step": 2,
            "max_steps": max_steps,
            "lr": 1e-4,
            "micro_batch_size": 4,
            **algorithm,
        },  # fmt: skip
        "rollout": {"engine": "hf", "max_new_tokens": max_new_tokens},
        "checkpoint": {"every": every},
        "eval": {"every": every, "max_new_tokens": 16},
    }
