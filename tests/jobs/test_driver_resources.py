"""The submitted driver asks Ray for no GPU and only the CPU share the loop leaves it."""

from __future__ import annotations

import pytest

from rlvr.config import JobSpec
from rlvr.jobs.runner import driver_resources


def _spec(replicas: int, learners: int) -> JobSpec:
    return JobSpec.model_validate(
        {
            "name": "t",
            "model": {"path": "tiny"},
            "data": {"train": "builtin:arithmetic"},
            "rollout": {"replicas": replicas},
            "algorithm": {"num_learners": learners},
        }
    )


@pytest.mark.parametrize(
    ("cpus", "replicas", "learners", "want"),
    [(64.0, 2, 1, 1.0), (2.0, 1, 0, 0.666), (2.0, 2, 1, 0.5), (None, 4, 2, 0.0)],
)
def test_the_driver_takes_no_gpu_and_at_most_one_actors_cpu_share(cpus, replicas, learners, want):
    got = driver_resources(_spec(replicas, learners), cpus)
    assert got["entrypoint_num_gpus"] == 0.0
    assert got["entrypoint_num_cpus"] == pytest.approx(want)
    if cpus:  # the driver plus every engine and learner at that share fit the cluster
        actors = replicas + max(learners, 1)
        assert got["entrypoint_num_cpus"] * (actors + 1) <= cpus + 1e-3
