"""Weight loads stay behind the rollouts submitted before them (``LoadOrder``), also when
the push comes from another process than the one that submitted the rollouts, as a learner
actor's does: Ray orders an actor's calls per caller only. And the opposite choice,
weight updates mid-sequence (``rollout.mid_sequence_weight_updates``): a push that reaches
an engine during a rollout lands at its next decoding step; the tokens before it were
sampled by the old weights, those after by the new, and each completion says which
versions it saw."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from rlvr.rollout._common import InProcessEngine, LoadOrder
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


# -- weight updates mid-sequence -------------------------------------------------------------
SAMPLED = SamplingConfig(n=2, max_new_tokens=8, temperature=1.0, seed=7)


def test_mid_sequence_a_load_lands_at_the_running_calls_next_step_and_ignores_after_calls():
    order = LoadOrder(mid_sequence=True)
    landed: list[str] = []
    assert order.load(5, lambda: landed.append("idle"))  # no call runs: at once, whatever
    with order.call():  # after_calls says
        assert order.holds(None)
        assert not order.load(None, lambda: landed.append("v1"))
        assert landed == ["idle"]  # not inside the step that is running
        assert order.at_step() == 1 and landed == ["idle", "v1"]
        assert order.at_step() == 0
        assert not order.load(None, lambda: landed.append("v2"))
    assert landed == ["idle", "v1", "v2"]  # the call's end lands what its last step missed
    assert not order.holds(None)


@pytest.fixture
def pause_at_first_step(monkeypatch):
    """Pauses an engine thread's first decoding step until the test has pushed: the load
    then arrives, deterministically, while the rollout runs."""
    from rlvr.rollout.hf import HFEngine

    reached, resume = threading.Event(), threading.Event()
    step = HFEngine._after_token

    def paused(self: HFEngine, next_token, landed):
        # (only the engine's thread: the test's own reference rollouts run on this one)
        if threading.current_thread() is not threading.main_thread() and not reached.is_set():
            reached.set()
            assert resume.wait(30)
        return step(self, next_token, landed)

    monkeypatch.setattr(HFEngine, "_after_token", paused)
    return reached, resume


def test_an_engine_takes_a_push_mid_rollout_and_tags_the_versions(
    random_model_dir, pause_at_first_step
):
    reached, resume = pause_at_first_step
    config = HFEngineConfig(model=str(random_model_dir), mid_sequence_loads=True)
    hf = HFEngine(config)
    engine = InProcessEngine(hf, on_thread=True, loads_beside=True)
    reference = HFEngine(HFEngineConfig(model=str(random_model_dir)))
    prompts = _prompts(reference, 3)
    old = reference.generate(prompts, SAMPLED)
    new_weights = _other_weights(reference)

    rollout = engine.generate.remote(prompts, SAMPLED)
    assert reached.wait(30)  # the first token is sampled; the rollout is running
    # The load runs on this thread, beside the rollout, and returns at once (held for the
    # next step): it does not queue behind the rollout on the engine's thread.
    engine.load_weights.remote(new_weights, 1).get(10)
    assert hf.weights_version() == 0  # held for the step
    resume.set()
    mixed = rollout.get(60)

    assert hf.weights_version() == 1
    for m, o in zip(mixed, old, strict=True):
        assert m.weights_version == 0  # its first token's
        assert m.token_ids[0] == o.token_ids[0]  # sampled before the load
        assert m.logprobs[0] == pytest.approx(o.logprobs[0], abs=1e-5)
        if len(m.token_ids) > 1:
            assert m.last_weights_version == 1
    # the tokens after the load were sampled by other weights than the old rollout's
    assert any(m.token_ids[1:] != o.token_ids[1:] for m, o in zip(mixed, old, strict=True))


def test_a_load_beside_a_rollout_leaves_the_rng_the_rollout_draws_from(
    random_model_dir, monkeypatch
):
    """A load runs on the pushing thread while the engine's thread samples from torch's
    global RNG: restoring that RNG when the load returns (as an engine call's fork_rng
    does) would rewind the rollout's draws. A load draws nothing and forks nothing."""
    config = HFEngineConfig(model=str(random_model_dir), mid_sequence_loads=True)
    hf = HFEngine(config)
    engine = InProcessEngine(hf, on_thread=True, loads_beside=True)
    forks: list[str] = []
    fork_rng = torch.random.fork_rng

    def spy(*args, **kwargs):
        forks.append(threading.current_thread().name)
        return fork_rng(*args, **kwargs)

    monkeypatch.setattr(torch.random, "fork_rng", spy)
    engine.load_weights.remote(_other_weights(hf), 1).get(10)
    assert forks == [] and hf.weights_version() == 1
    engine.generate.remote(_prompts(hf, 1), SAMPLED).get(60)
    assert len(forks) == 1 and forks[0].startswith("rlvr-engine")  # a rollout still forks


def test_without_the_flag_a_push_during_a_rollout_lands_after_it(
    random_model_dir, pause_at_first_step
):
    reached, resume = pause_at_first_step
    engine = HFEngine(HFEngineConfig(model=str(random_model_dir)))
    in_process = InProcessEngine(engine, on_thread=True)
    prompts = _prompts(engine, 3)
    new_weights = _other_weights(engine)
    rollout = in_process.generate.remote(prompts, SAMPLED)
    assert reached.wait(30)
    push = in_process.load_weights.remote(new_weights, 1)  # queued behind the rollout
    resume.set()
    whole = rollout.get(60)
    push.get(10)
    assert {(c.weights_version, c.last_weights_version) for c in whole} == {(0, None)}
    assert engine.weights_version() == 1


@pytest.mark.slow
def test_an_engine_actor_takes_a_push_beside_a_running_rollout(ray_cluster, random_model_dir):
    """The actor's loads run in a concurrency group of their own: a push returns while a
    long rollout is still running (without it the push would queue behind the rollout)."""
    import ray

    config = HFEngineConfig(model=str(random_model_dir), mid_sequence_loads=True)
    rollout = HFRollout(config, replicas=1, num_cpus=0)
    try:
        [actor] = rollout.replicas.engines
        reference = HFEngine(HFEngineConfig(model=str(random_model_dir)))
        new_weights = _other_weights(reference)
        long = SamplingConfig(n=8, max_new_tokens=64, temperature=1.0, seed=3)
        prompts = _prompts(reference, 24) * 2
        ray.get(actor.generate.remote(prompts[:1], SAMPLED), timeout=60)  # warm
        pending = actor.generate.remote(prompts, long)
        ray.get(actor.load_weights.remote(new_weights, 1), timeout=60)
        ready, _ = ray.wait([pending], timeout=0)
        assert not ready  # the push did not wait for the rollout
        done = ray.get(pending, timeout=120)
        assert ray.get(actor.weights_version.remote(), timeout=60) == 1
        versions = {(c.weights_version, c.last_weights_version) for c in done}
        # it landed mid-rollout (or, had it beaten the call's start, before its first token)
        assert versions <= {(0, 1), (0, None), (1, None)} and versions != {(0, None)}
    finally:
        rollout.shutdown()


def _spec(**rollout) -> dict:
    return {
        "name": "x",
        "model": {"path": "tiny:arithmetic"},
        "data": {"train": "builtin:arithmetic"},
        "algorithm": {"max_staleness": 1},
        "rollout": rollout,
    }


def test_the_flag_needs_an_async_run_and_says_so():
    from pydantic import ValidationError

    from rlvr.config import JobSpec

    spec = _spec(mid_sequence_weight_updates=True)
    assert JobSpec.model_validate(spec).rollout.mid_sequence_weight_updates
    for engine in ("hf", "vllm"):  # both engines take loads mid-sequence
        assert JobSpec.model_validate(_spec(mid_sequence_weight_updates=True, engine=engine))
    spec["algorithm"]["max_staleness"] = 0
    with pytest.raises(ValidationError, match=r"needs algorithm.max_staleness >= 1"):
        JobSpec.model_validate(spec)


def test_a_gpu_cluster_whose_engine_is_vllm_plans_the_flag_without_a_problem():
    """The plan chooses vLLM for a GPU cluster; its engines take loads mid-sequence too
    (rlvr.rollout.vllm), so the flag is no problem of the plan."""
    from rlvr.config import JobSpec
    from rlvr.plan.placement import cluster_from_args, make_plan

    spec = JobSpec.model_validate(_spec(mid_sequence_weight_updates=True))  # engine: auto
    plan = make_plan(spec, cluster_from_args(2, 80))
    assert plan.engine == "vllm"
    assert plan.problems == []
