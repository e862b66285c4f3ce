"""Weight loads stay behind the rollouts submitted before them (``LoadOrder``), also when
the push comes from another process than the one that submitted the rollouts, as a learner
actor's does: Ray orders an actor's calls per caller only."""

from __future__ import annotations

import time

import torch

from rlvr.rollout._common import LoadOrder
from rlvr.rollout.base import SamplingConfig
from rlvr.rollout.hf import HFEngine, HFEngineConfig, HFRollout

GREEDY = SamplingConfig(n=1, max_new_tokens=6, temperature=0.0)


def _prompts(engine: HFEngine, n: int = 2) -> list[list[int]]:
    texts = [f"<|im_start|>user\nWhat is {i} + {i * 3}?<|im_end|>\n" for i in range(n)]
    return [engine.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def _other_weights(engine: HFEngine) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {k: v + torch.randn(v.shape, generator=g) for k, v in engine.model.state_dict().items()}


def test_a_load_is_held_until_the_calls_before_it_end_and_loads_keep_their_order():
    order = LoadOrder()
    landed: list[str] = []
    assert order.load(None, lambda: landed.append("now"))  # nothing to wait for
    assert not order.load(2, lambda: landed.append("v1"))  # two calls were made before it
    assert not order.load(None, lambda: landed.append("v2"))  # behind v1, whatever it says
    with order.call():
        pass
    assert landed == ["now"]  # one of the two calls has run
    with order.call():
        assert landed == ["now"]  # never during a call
    assert landed == ["now", "v1", "v2"]
    assert order.load(2, lambda: landed.append("v3"))  # its calls have run: at once
    assert landed[-1] == "v3"


def test_an_engine_samples_with_the_old_weights_when_their_push_comes_first(random_model_dir):
    engine = HFEngine(HFEngineConfig(model=str(random_model_dir)))
    reference = HFEngine(HFEngineConfig(model=str(random_model_dir)))
    prompts = _prompts(engine)
    old = reference.generate(prompts, GREEDY)
    new_weights = _other_weights(engine)

    # The push says one generate call was made before it; that call has not started yet.
    engine.load_weights(new_weights, version=3, after_calls=1)
    assert engine.weights_version() == 0
    first = engine.generate(prompts, GREEDY)
    assert [c.token_ids for c in first] == [c.token_ids for c in old]
    assert {c.weights_version for c in first} == {0}
    assert engine.weights_version() == 3  # landed when that call ended

    reference.load_weights(new_weights, version=3)
    second = engine.generate(prompts, GREEDY)
    assert [c.token_ids for c in second] == [
        c.token_ids for c in reference.generate(prompts, GREEDY)
    ]
    assert [c.token_ids for c in second] != [c.token_ids for c in first]
    assert {c.weights_version for c in second} == {3}


def test_the_replica_group_counts_the_calls_made_to_each_engine(random_model_dir):
    from rlvr.rollout._common import InProcessEngine, ReplicaGroup

    group = ReplicaGroup("HF", call_timeout_s=60)
    config = HFEngineConfig(model=str(random_model_dir))
    group.start(lambda i: InProcessEngine(HFEngine(config)), replicas=2, timeout_s=60)
    try:
        prompts = _prompts(HFEngine(config), 3)
        assert group.calls_made() == [0, 0]
        group.generate(prompts, GREEDY)
        group.generate(prompts[:1], GREEDY)  # one prompt: only the first engine is called
        assert group.calls_made() == [2, 1]
    finally:
        group.shutdown()


def test_a_push_from_another_actor_that_overtakes_a_rollout_lands_after_it(
    ray_cluster, random_model_dir
):
    """The driver's generate waits for a slow argument (as a rollout waits behind earlier
    work), so another actor's push reaches the engine first. With ``after_calls`` the
    rollout still samples the old weights; without it (the control, second round) it
    samples the new ones."""
    import ray

    @ray.remote(num_cpus=0)
    class Pusher:  # stands in for a learner actor: a second caller of the engine
        def push(self, engine, weights, version, after_calls):
            return ray.get(engine.load_weights.remote(weights, version, after_calls), timeout=120)

    @ray.remote(num_cpus=0)
    def slowly(value):
        time.sleep(3)
        return value

    rollout = HFRollout(
        HFEngineConfig(model=str(random_model_dir)), replicas=1, num_cpus=0, call_timeout_s=120
    )
    try:
        local = HFEngine(HFEngineConfig(model=str(random_model_dir)))
        prompts = _prompts(local)
        pusher = Pusher.remote()
        (engine,) = rollout.replicas.engines
        ray.get(pusher.__ray_ready__.remote(), timeout=60)
        for calls, (version, held) in enumerate([(4, True), (5, False)], start=1):
            before = local.generate(prompts, GREEDY)  # the weights the engine holds now
            new_weights = _other_weights(local)
            pending = engine.generate.remote(slowly.remote(prompts), GREEDY)  # call `calls`
            weights = ray.put({k: v.numpy() for k, v in new_weights.items()})
            push = pusher.push.remote(engine, weights, version, calls if held else None)
            ray.get(push, timeout=120)
            ready, _ = ray.wait([pending], timeout=0)
            assert not ready  # the push was answered while the rollout waited: it came first
            completions = ray.get(pending, timeout=120)
            local.load_weights(new_weights, version)
            if held:
                assert [c.token_ids for c in completions] == [c.token_ids for c in before]
                assert {c.weights_version for c in completions} == {0}  # the initial weights
            else:
                assert [c.token_ids for c in completions] != [c.token_ids for c in before]
                assert [c.token_ids for c in completions] == [
                    c.token_ids for c in local.generate(prompts, GREEDY)
                ]
                assert {c.weights_version for c in completions} == {version}
            assert ray.get(engine.weights_version.remote(), timeout=60) == version
    finally:
        rollout.shutdown()
