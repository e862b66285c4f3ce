"""ReplicaGroup on a real local Ray cluster, with plain actors standing in for engines."""

from __future__ import annotations

import time

import pytest

from rlvr.rollout._common import ReplicaGroup
from rlvr.rollout.base import Completion, SamplingConfig


@pytest.fixture
def echo_actor(ray_cluster):
    """An engine-shaped Ray actor class (defined here so that Ray ships it by value)."""

    class _Echo:
        """An engine-shaped actor: completions name the replica; ``info`` fails when asked to."""

        def __init__(self, replica: int, fail_start: bool = False) -> None:
            self.replica, self.fail_start, self.version = replica, fail_start, 0

        def info(self) -> dict:
            if self.fail_start:
                raise RuntimeError(f"replica {self.replica} cannot load the model")
            return {"replica": self.replica}

        def generate(self, prompts, sampling, prompt_offset=0, tag=""):
            return [
                Completion(prompt_offset + i, list(p), f"{tag}r{self.replica}", [], "stop")
                for i, p in enumerate(prompts)
            ]

        def load(self, state, version):
            self.version = version + int(state["shift"])

        def weights_version(self) -> int:
            return self.version

    return ray_cluster.remote(_Echo).options(num_cpus=0)


def test_replicas_share_the_prompts_in_order_and_load_one_object(echo_actor):
    actor = echo_actor
    group = ReplicaGroup("echo", call_timeout_s=60)
    infos = group.start(lambda i: actor.remote(i), replicas=2, timeout_s=60)
    try:
        assert infos == [{"replica": 0}, {"replica": 1}]
        out = group.generate([[1], [2], [3]], SamplingConfig(), tag="x")
        assert [(c.prompt_index, c.token_ids, c.text) for c in out] == [
            (0, [1], "xr0"),
            (1, [2], "xr0"),
            (2, [3], "xr1"),
        ]
        group.put_to_all("load", {"shift": 1}, version=4)
        assert group.weights_version() == 5
    finally:
        group.shutdown()
    assert group.engines == []


def test_a_replica_that_fails_to_start_takes_the_started_ones_down(ray_cluster, echo_actor):
    actor = echo_actor
    group = ReplicaGroup("echo", call_timeout_s=60)
    started = []

    def new_actor(i):
        started.append(actor.remote(i, fail_start=(i == 1)))
        return started[-1]

    with pytest.raises(RuntimeError, match="replica 1 cannot load the model"):
        group.start(new_actor, replicas=2, timeout_s=60, one_by_one=True)
    assert group.engines == [] and len(started) == 2
    # ray.kill lands asynchronously: a call made in the same instant may still be answered
    deadline = time.monotonic() + 30  # a bound for a hang, not a speed check
    with pytest.raises(ray_cluster.exceptions.RayActorError):
        while time.monotonic() < deadline:
            ray_cluster.get(started[0].info.remote(), timeout=30)
            time.sleep(0.2)
