"""The HF rollout engine: sampling, logprobs of the sampling distribution, stop strings,
seeding, weight loading; and the Ray-actor front end (replicas, object-store weights)."""

from __future__ import annotations

import pytest
import torch

from rlvr.models.causal_lm import shared_prefix_length
from rlvr.rollout.base import SamplingConfig
from rlvr.rollout.hf import HFEngine, HFEngineConfig, HFRollout


@pytest.fixture(scope="module")
def engine(random_model_dir):
    return HFEngine(HFEngineConfig(model=str(random_model_dir)))


def _prompts(engine, n=3):
    tok = engine.tokenizer
    texts = [
        f"<|im_start|>user\nWhat is {i} + {i * 7}?<|im_end|>\n<|im_start|>assistant\n"
        for i in range(n)
    ]
    return [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


def _recompute_logprobs(engine, prompt, tokens, temperature):
    ids = torch.tensor([prompt + tokens])
    with torch.no_grad():
        logits = engine.model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float() / temperature
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(tokens)[:, None]).squeeze(-1)


def test_generate_returns_n_completions_per_prompt_in_prompt_order(engine):
    prompts = _prompts(engine, 3)
    out = engine.generate(prompts, SamplingConfig(n=4, max_new_tokens=12, temperature=1.0, seed=0))
    assert [c.prompt_index for c in out] == [0] * 4 + [1] * 4 + [2] * 4
    for c in out:
        assert 1 <= len(c.token_ids) <= 12
        assert len(c.logprobs) == len(c.token_ids)
        assert c.finish_reason in ("stop", "length")
        assert c.finish_reason == "stop" or len(c.token_ids) == 12
        assert "<|im_end|>" not in c.text and "<|endoftext|>" not in c.text


def test_logprobs_are_those_of_the_tempered_sampling_distribution(engine):
    prompts = _prompts(engine, 2)
    out = engine.generate(prompts, SamplingConfig(n=3, max_new_tokens=10, temperature=0.7, seed=1))
    for c in out:
        expected = _recompute_logprobs(engine, prompts[c.prompt_index], c.token_ids, 0.7)
        assert torch.allclose(torch.tensor(c.logprobs), expected, atol=1e-4)


def test_sampling_draws_from_the_whole_vocabulary_not_a_default_top_k(engine):
    # transformers adds top_k=50 to every sampling call unless told otherwise: the engine
    # would then sample a truncated distribution while recording the full one's logprobs
    prompt = _prompts(engine, 1)[0]
    with torch.no_grad():
        probs = engine.model(input_ids=torch.tensor([prompt])).logits[0, -1].float().softmax(-1)
    assert probs.numel() > 60
    top50 = set(probs.topk(50).indices.tolist())
    beyond = 1.0 - float(probs[list(top50)].sum())  # the random model's mass outside them
    assert beyond > 0.1
    out = engine.generate(
        [prompt], SamplingConfig(n=400, max_new_tokens=1, temperature=1.0, seed=0)
    )
    outside = sum(c.token_ids[0] not in top50 for c in out)
    assert outside > 0.5 * 400 * beyond, (outside, beyond)


def test_a_token_is_drawn_with_its_probability_and_never_a_masked_one():
    from rlvr.rollout.hf import _draw

    p = torch.tensor([0.5, 0.0, 0.3, 0.15, 0.0, 0.05])
    logp = p.log().expand(40_000, -1)  # log 0 = -inf: what top-p leaves of a token
    torch.manual_seed(0)
    freq = torch.bincount(_draw(logp, torch.rand(40_000)), minlength=6).float() / 40_000
    assert freq[1] == 0 and freq[4] == 0
    assert torch.allclose(freq, p, atol=0.01), freq
    # a uniform number past the CDF's last step (rounding) takes the last token with mass
    assert _draw(torch.tensor([[0.0, -float("inf")]]), torch.tensor([1.0])).tolist() == [0]


def test_top_p_logprobs_are_renormalised_over_the_kept_tokens(engine):
    prompts = _prompts(engine, 1)
    out = engine.generate(
        prompts, SamplingConfig(n=4, max_new_tokens=8, temperature=1.0, top_p=0.5, seed=2)
    )
    for c in out:
        full = _recompute_logprobs(engine, prompts[0], c.token_ids, 1.0)
        # Truncating to the top-p nucleus can only raise a sampled token's probability.
        assert bool((torch.tensor(c.logprobs) >= full - 1e-5).all())


def test_seeded_sampling_is_reproducible_and_seed_dependent(engine):
    prompts = _prompts(engine, 2)
    cfg = SamplingConfig(n=3, max_new_tokens=10, temperature=1.0, seed=5)
    a = engine.generate(prompts, cfg)
    b = engine.generate(prompts, cfg)
    c = engine.generate(prompts, SamplingConfig(n=3, max_new_tokens=10, temperature=1.0, seed=6))
    assert [x.token_ids for x in a] == [x.token_ids for x in b]
    assert [x.token_ids for x in a] != [x.token_ids for x in c]


def test_greedy_gives_identical_samples_with_exact_logprobs(engine):
    prompts = _prompts(engine, 2)
    out = engine.generate(prompts, SamplingConfig(n=2, max_new_tokens=8, temperature=0.0))
    assert out[0].token_ids == out[1].token_ids
    expected = _recompute_logprobs(engine, prompts[0], out[0].token_ids, 1.0)
    assert torch.allclose(torch.tensor(out[0].logprobs), expected, atol=1e-4)


def test_stop_string_ends_the_completion_and_is_kept(engine):
    prompts = _prompts(engine, 2)
    out = engine.generate(prompts, SamplingConfig(n=4, max_new_tokens=40, temperature=1.5, seed=3))
    # pick a character that appears in some sampled completion, then stop on it (not one of
    # a special token's: stop strings match the raw text, where "<think>" holds an "h")
    in_specials = set("".join(engine.tokenizer.get_added_vocab()))
    stop = next(ch for c in out for ch in c.text[2:] if ch not in in_specials and not ch.isspace())
    cut = engine.generate(
        prompts, SamplingConfig(n=4, max_new_tokens=40, temperature=1.5, stop=[stop], seed=3)
    )
    assert any(c.finish_reason == "stop" and c.text.endswith(stop) for c in cut)
    for c in cut:
        if stop in c.text:
            assert c.text.index(stop) == len(c.text) - len(stop)  # nothing after the first stop
            assert len(c.logprobs) == len(c.token_ids)


def test_bad_requests_name_the_field(engine):
    with pytest.raises(ValueError, match="prompt 0 has no tokens"):
        engine.generate([[]], SamplingConfig())
    with pytest.raises(ValueError, match="top_p"):
        engine.generate(_prompts(engine, 1), SamplingConfig(top_p=0.0))


def test_load_weights_replaces_the_policy_and_tracks_the_version(random_model_dir):
    eng = HFEngine(HFEngineConfig(model=str(random_model_dir)))
    prompts = _prompts(eng, 1)
    greedy = SamplingConfig(n=1, max_new_tokens=8, temperature=0.0)
    before = eng.generate(prompts, greedy)[0]
    state = {k: v.clone() for k, v in eng.model.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    state["model.norm.weight"] = torch.rand(state["model.norm.weight"].shape, generator=g) * 3
    state["model.embed_tokens.weight"] = torch.randn(
        state["model.embed_tokens.weight"].shape, generator=g
    )
    eng.load_weights({k: v.numpy() for k, v in state.items()}, version=7)
    after = eng.generate(prompts, greedy)[0]
    assert eng.weights_version() == 7
    assert after.logprobs != before.logprobs
    with pytest.raises(KeyError, match="unknown parameters"):
        eng.load_weights({"not.a.param": torch.zeros(1)}, version=8)


def test_rollout_spreads_prompts_over_replicas_and_syncs_weights(ray_cluster, random_model_dir):
    rollout = HFRollout(
        HFEngineConfig(model=str(random_model_dir)), replicas=2, num_cpus=0, call_timeout_s=120
    )
    try:
        local = HFEngine(HFEngineConfig(model=str(random_model_dir)))
        prompts = _prompts(local, 5)
        out = rollout.generate(prompts, SamplingConfig(n=2, max_new_tokens=6, temperature=0.0))
        assert [c.prompt_index for c in out] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
        # Same weights, greedy: the replicas answer exactly as a local engine does.
        expected = local.generate(prompts, SamplingConfig(n=2, max_new_tokens=6, temperature=0.0))
        assert [c.token_ids for c in out] == [c.token_ids for c in expected]
        state = {k: v * 1.5 for k, v in local.model.state_dict().items()}
        rollout.load_weights(state, version=3)
        assert rollout.weights_version() == 3
        local.load_weights(state, version=3)
        moved = rollout.generate(prompts, SamplingConfig(n=1, max_new_tokens=6, temperature=0.0))
        expected = local.generate(prompts, SamplingConfig(n=1, max_new_tokens=6, temperature=0.0))
        assert [c.token_ids for c in moved] == [c.token_ids for c in expected]
        flat = [lp for c in moved for lp in c.logprobs]
        assert flat == pytest.approx([lp for c in expected for lp in c.logprobs], abs=1e-5)
    finally:
        rollout.shutdown()


def test_an_engine_in_the_driver_samples_as_its_actor_does_and_leaves_the_rng_alone(
    ray_cluster, random_model_dir
):
    """The plan's engines_in_driver: the same calls (submit, parts, the weight sender's
    object-store path) drive an engine in this process; seeded samples equal the actor's,
    and its seeding does not move the driver's own torch RNG (the learner's draws)."""
    from rlvr.rollout.weight_sync import WeightSender

    config = HFEngineConfig(model=str(random_model_dir))
    here = HFRollout(config, in_process=True, call_timeout_s=120)
    actor = HFRollout(config, replicas=1, num_cpus=0, call_timeout_s=120)
    try:
        prompts = _prompts(HFEngine(config), 4)
        sampling = SamplingConfig(n=3, max_new_tokens=6, temperature=1.0, seed=11)
        torch.manual_seed(5)
        expected_draw = torch.rand(3)
        torch.manual_seed(5)
        pending = here.submit(prompts, sampling)  # runs now: nothing overlaps in one process
        assert torch.equal(torch.rand(3), expected_draw)
        mine = [c for part in pending.parts() for c in part]
        theirs = actor.generate(prompts, sampling)
        assert [c.token_ids for c in mine] == [c.token_ids for c in theirs]
        flat = [lp for c in mine for lp in c.logprobs]
        assert flat == pytest.approx([lp for c in theirs for lp in c.logprobs], abs=1e-6)
        # weights by the sender's object-store path, as the loop's step 5 sends them
        state = {k: v * 1.5 for k, v in HFEngine(config).model.state_dict().items()}
        for rollout in (here, actor):
            sender = WeightSender(rollout.replicas.engines, "object_store", timeout_s=60)
            sender.push(state, version=4)
            assert rollout.weights_version() == 4
        greedy = SamplingConfig(n=1, max_new_tokens=6, temperature=0.0)
        assert [c.token_ids for c in here.generate(prompts, greedy)] == [
            c.token_ids for c in actor.generate(prompts, greedy)
        ]
        with pytest.raises(ValueError, match="one replica"):
            HFRollout(config, replicas=2, in_process=True)
    finally:
        here.shutdown()
        actor.shutdown()
    assert here.replicas.engines == []


def test_an_engine_on_its_own_thread_runs_beside_the_caller_in_call_order(random_model_dir):
    """An asynchronous run's engine in the driver (no Ray): ``submit`` returns while the
    generate is still running on the engine's thread; a weight load made after it waits for
    it (no update mid-sequence, as an actor's call order gives); the samples are those of
    an engine without a thread."""
    import threading

    from rlvr.rollout.weight_sync import WeightSender

    config = HFEngineConfig(model=str(random_model_dir))
    threaded = HFRollout(config, in_process=True, engine_thread=True, call_timeout_s=120)
    plain = HFRollout(config, in_process=True, call_timeout_s=120)
    try:
        prompts = _prompts(HFEngine(config), 4)
        sampling = SamplingConfig(n=3, max_new_tokens=6, temperature=1.0, seed=11)
        engine = threaded.replicas.engines[0]._engine
        release, seen = threading.Event(), []
        generate = engine.generate

        def held_generate(*args, **kwargs):
            seen.append(threading.current_thread().name)
            assert release.wait(60)
            return generate(*args, **kwargs)

        state = {k: v * 1.5 for k, v in HFEngine(config).model.state_dict().items()}
        sender = WeightSender(threaded.replicas.engines, "object_store", timeout_s=60)
        engine.generate = held_generate
        pending = threaded.submit(prompts, sampling)  # returns: the generate is held
        loader = threading.Thread(target=sender.push, args=(state, 4))
        loader.start()
        loader.join(0.5)
        assert loader.is_alive()  # queued behind the held generate
        release.set()
        mine = [c for part in pending.parts() for c in part]
        loader.join(60)
        assert seen and seen[0].startswith("rlvr-engine")
        theirs = plain.generate(prompts, sampling)  # the old weights: the load came after
        assert [c.token_ids for c in mine] == [c.token_ids for c in theirs]
        assert threaded.weights_version() == 4
        WeightSender(plain.replicas.engines, "object_store", timeout_s=60).push(state, 4)
        greedy = SamplingConfig(n=1, max_new_tokens=6, temperature=0.0)
        assert [c.token_ids for c in threaded.generate(prompts, greedy)] == [
            c.token_ids for c in plain.generate(prompts, greedy)
        ]
    finally:
        threaded.shutdown()
        plain.shutdown()


@pytest.mark.gpu
def test_engine_on_cuda_in_bf16_records_the_sampled_tokens_logprobs(random_model_dir):
    eng = HFEngine(HFEngineConfig(model=str(random_model_dir), device="cuda", dtype="auto"))
    assert eng.model.dtype == torch.bfloat16
    prompts = _preamble_prompts(eng, 4)  # a shared prefix, prefilled once
    out = eng.generate(prompts, SamplingConfig(n=4, max_new_tokens=24, temperature=0.8, seed=0))
    assert len(out) == 16
    for c in out:
        ids = torch.tensor([prompts[c.prompt_index] + c.token_ids], device="cuda")
        with torch.no_grad():
            logits = (
                eng.model(input_ids=ids).logits[0, len(prompts[c.prompt_index]) - 1 : -1].float()
                / 0.8
            )
        expected = (
            torch.log_softmax(logits, -1).gather(-1, ids[0, -len(c.token_ids) :, None]).squeeze(-1)
        )
        # bf16 batched vs single-sequence forward: small numeric differences only
        assert (torch.tensor(c.logprobs, device="cuda") - expected).abs().mean() < 0.05


def test_shared_prefill_samples_what_a_prefill_per_row_samples(random_model_dir):
    plain = HFEngine(HFEngineConfig(model=str(random_model_dir), share_prefill=False))
    shared = HFEngine(HFEngineConfig(model=str(random_model_dir)))
    prompts = _prompts(plain, 3)  # of different lengths: left padding
    sampling = SamplingConfig(n=4, max_new_tokens=12, temperature=1.0, seed=3)
    a, b = plain.generate(prompts, sampling), shared.generate(prompts, sampling)
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    for x, y in zip(a, b, strict=True):
        assert torch.allclose(torch.tensor(x.logprobs), torch.tensor(y.logprobs), atol=1e-5)


def test_a_cache_that_cannot_repeat_or_drop_rows_samples_the_same(random_model_dir, monkeypatch):
    # (transformers' DynamicCache can; a cache that cannot gets a prefill per row and keeps
    # its ended rows in the batch)
    engine = HFEngine(HFEngineConfig(model=str(random_model_dir)))
    prompts = _prompts(engine, 3)
    sampling = SamplingConfig(n=4, max_new_tokens=64, temperature=1.0, seed=5)
    usual = engine.generate(prompts, sampling)
    assert len({len(c.token_ids) for c in usual}) > 1  # rows ended at different steps
    monkeypatch.setattr("rlvr.rollout.hf._cache_can", lambda cache, method: False)
    fallback = engine.generate(prompts, sampling)
    for a, b in zip(usual, fallback, strict=True):
        assert a.token_ids == b.token_ids
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)


def test_each_prompt_is_prefilled_once_for_its_n_samples(random_model_dir, forward_shapes):
    engine = HFEngine(HFEngineConfig(model=str(random_model_dir), share_prefix=False))
    prompts = _prompts(engine, 3)
    rows = forward_shapes(engine.model)
    engine.generate(prompts, SamplingConfig(n=4, max_new_tokens=5, temperature=1.0, seed=0))
    width = max(len(p) for p in prompts)
    # 3 prompts prefilled once (all but their last token), then 12 rows fed one token a step
    assert rows[0] == (3, width - 1)
    assert rows[1] == (12, 1)
    assert all(r[0] == 12 for r in rows[1:])


def _preamble_prompts(engine, n):
    """Prompts that start with the same system preamble and differ in length after it."""
    tok = engine.tokenizer
    system = "<|im_start|>system\nThink step by step, then answer inside tags.<|im_end|>\n"
    texts = [
        f"{system}<|im_start|>user\nWhat is {i * 13} + {i}?<|im_end|>\n<|im_start|>assistant\n"
        for i in range(n)
    ]
    return [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


def test_a_prefix_every_prompt_shares_is_prefilled_once(random_model_dir, forward_shapes):
    engine = HFEngine(HFEngineConfig(model=str(random_model_dir)))
    prompts = _preamble_prompts(engine, 6)
    prefix = shared_prefix_length(prompts)
    assert prefix >= 10 and len({len(p) for p in prompts}) > 1
    assert all(p[:prefix] == prompts[0][:prefix] for p in prompts)
    rows = forward_shapes(engine.model)
    engine.generate(prompts, SamplingConfig(n=2, max_new_tokens=4, temperature=1.0, seed=0))
    width = max(len(p) for p in prompts)
    # the prefix once, then every prompt's rest once, then 12 rows a token a step
    assert rows[:3] == [(1, prefix), (6, width - 1 - prefix), (12, 1)]


def test_a_shared_prefix_samples_what_a_prefill_per_prompt_samples(random_model_dir):
    shared = HFEngine(HFEngineConfig(model=str(random_model_dir)))
    plain = HFEngine(HFEngineConfig(model=str(random_model_dir), share_prefix=False))
    prompts = _preamble_prompts(shared, 5)
    for sampling in (
        SamplingConfig(n=1, max_new_tokens=16, temperature=0.0),
        SamplingConfig(n=4, max_new_tokens=16, temperature=1.0, seed=7),
    ):
        a, b = shared.generate(prompts, sampling), plain.generate(prompts, sampling)
        assert [c.token_ids for c in a] == [c.token_ids for c in b]
        for x, y in zip(a, b, strict=True):
            assert x.logprobs == pytest.approx(y.logprobs, abs=1e-4)
            assert x.text == y.text


def test_a_prefix_is_shared_only_where_it_spares_enough_tokens():
    preamble = list(range(100, 120))  # 20 tokens
    assert shared_prefix_length([preamble + [1, 2], preamble + [3]]) == 0  # 20 tokens spared: < 32
    assert shared_prefix_length([preamble + [1, 2], preamble + [3], preamble + [4, 5, 6]]) == 20
    # never a prompt's last token (decoding starts by feeding it)
    assert shared_prefix_length([preamble + [1]] * 3) == 20
    assert shared_prefix_length([preamble]) == 0  # one prompt: nothing to share
