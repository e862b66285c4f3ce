"""CPU tests of the vLLM engine's own logic and of the weight-sync wire format.

vLLM cannot run here (no GPU), so the ``vllm`` module is replaced at its boundary by a small
stand-in package (``LLM``, ``SamplingParams``) written to a temporary directory; everything of
ours — request building, logprob extraction, prompt spreading over real Ray actors, packing
weights through the real object store, loading them via ``collective_rpc`` — runs for real.
The real vLLM path is covered by ``tests/gpu/test_vllm_engine.py`` on a GPU.
"""

from __future__ import annotations

import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch

from rlvr.rollout._common import split_evenly, strip_tokens, validate_request
from rlvr.rollout.base import SamplingConfig
from rlvr.rollout.vllm import (
    VllmEngine,
    VllmEngineConfig,
    VllmRollout,
    completions_from_outputs,
    sampled_logprobs,
    sampling_params_kwargs,
)
from rlvr.rollout.weight_sync import (
    WeightLayout,
    WeightSender,
    choose_method,
    pack_weights,
    plan_layout,
    unpack_weights,
)

# A stand-in for the vllm package: deterministic "generation" that reveals what it was asked
# (batch size, seed, prefix-cache resets, loaded weights) so the tests can check our side.
FAKE_VLLM = textwrap.dedent(
    '''
    import os
    from types import SimpleNamespace

    class SamplingParams:
        def __init__(self, **kw):
            self.kw = kw

    class _Flat:
        """Like vllm.logprobs.FlatLogprobs with logprobs=0: one entry per position."""
        def __init__(self, toks):
            self.token_ids = list(toks)
            self.logprobs = [-0.25 * (k + 1) for k in range(len(toks))]
            self.start_indices = list(range(len(toks)))
            self.end_indices = [k + 1 for k in range(len(toks))]
        def __len__(self):
            return len(self.token_ids)

    class _Model:
        def __init__(self):
            self.params = {}
        def load_weights(self, weights):
            for name, t in weights:
                self.params[name] = t.detach().clone()
        def named_parameters(self):
            return iter(self.params.items())

    class _Tokenizer:
        all_special_tokens = ["<|endoftext|>", "<|im_end|>", "<think>", "</think>"]

    class LLM:
        def __init__(self, **kw):
            self.kw = kw
            self.worker = SimpleNamespace(model_runner=SimpleNamespace(model=_Model()))
            self.resets = 0
            self.model_config = SimpleNamespace(max_model_len=64, get_vocab_size=lambda: 100)
            self.mp = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")

        def get_tokenizer(self):
            return _Tokenizer()

        def collective_rpc(self, fn, timeout=None, args=(), kwargs=None):
            return [fn(self.worker, *args, **(kwargs or {}))]

        def reset_prefix_cache(self):
            self.resets += 1
            return True

        def generate(self, prompts, params, use_tqdm=True):
            params = params if isinstance(params, list) else [params] * len(prompts)
            shift_t = self.worker.model_runner.model.params.get("shift")
            shift = 0 if shift_t is None else int(shift_t.sum())
            outs = []
            for p, sp in zip(prompts, params):
                kw, ids = sp.kw, p["prompt_token_ids"]
                comps = []
                for j in range(kw["n"]):
                    toks = [(ids[-1] + shift + j + k) % 100 for k in range(kw["max_tokens"])]
                    text = (f"<think>batch={len(prompts)} seed={kw.get('seed')} "
                            f"resets={self.resets} mp={self.mp}</think><|im_end|>")
                    comps.append(SimpleNamespace(index=j, token_ids=toks, text=text,
                                                 logprobs=_Flat(toks), finish_reason="length"))
                outs.append(SimpleNamespace(outputs=comps[::-1]))  # vLLM's order is not promised
            return outs
    '''
)


@pytest.fixture(scope="module")
def fake_vllm_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("fake_vllm")
    (d / "vllm").mkdir()
    (d / "vllm" / "__init__.py").write_text(FAKE_VLLM)
    return d


@pytest.fixture
def fake_vllm(fake_vllm_dir, monkeypatch):
    """The stand-in importable in this process as ``vllm``."""
    monkeypatch.syspath_prepend(str(fake_vllm_dir))
    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    yield
    sys.modules.pop("vllm", None)


# -- request building ---------------------------------------------------------------------------
def test_sampling_params_carry_every_field_and_ask_for_sampled_logprobs():
    s = SamplingConfig(n=4, max_new_tokens=32, temperature=0.7, top_p=0.9, stop=["</answer>"])
    [kw] = sampling_params_kwargs(s, num_prompts=3)
    assert kw["n"] == 4 and kw["max_tokens"] == 32
    assert kw["temperature"] == 0.7 and kw["top_p"] == 0.9
    assert kw["stop"] == ["</answer>"] and kw["include_stop_str_in_output"] is True
    assert kw["logprobs"] == 0  # the sampled token only
    assert kw["skip_special_tokens"] is False  # markup survives; control tokens stripped later
    assert kw["ignore_eos"] is False and "seed" not in kw


def test_seeded_sampling_gives_each_prompt_and_sample_its_own_stream_independent_of_spreading():
    s = SamplingConfig(n=3, seed=100)
    whole = sampling_params_kwargs(s, num_prompts=4)
    first = sampling_params_kwargs(s, num_prompts=2, prompt_offset=0)
    second = sampling_params_kwargs(s, num_prompts=2, prompt_offset=2)
    assert [k["seed"] for k in whole] == [100, 103, 106, 109]  # vLLM adds 0..n-1 per sample
    assert [k["seed"] for k in first + second] == [k["seed"] for k in whole]


def test_llm_kwargs_ask_for_processed_logprobs_and_pass_only_set_options():
    cfg = VllmEngineConfig(model="/m", gpu_memory_utilization=0.3, max_model_len=1024)
    kw = cfg.llm_kwargs()
    assert kw["logprobs_mode"] == "processed_logprobs"
    assert kw["gpu_memory_utilization"] == 0.3 and kw["max_model_len"] == 1024
    assert "kv_cache_memory_bytes" not in kw and "max_num_seqs" not in kw


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"gpu_memory_utilization": 0.99}, "gpu_memory_utilization"),
        ({"extra": {"seed": 1}}, "seed"),
    ],
)
def test_engine_config_rejects_bad_values_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        VllmEngineConfig(model="/m", **kwargs)


def test_engine_config_from_spec_uses_the_rollout_section():
    from rlvr.config import JobSpec

    spec = JobSpec.model_validate(
        {
            "rollout": {"gpu_memory_utilization": 0.4, "max_new_tokens": 100},
            "data": {"max_prompt_tokens": 50},
        }
    )
    cfg = VllmEngineConfig.from_spec(spec, "/models/x")
    assert cfg.model == "/models/x" and cfg.gpu_memory_utilization == 0.4
    assert cfg.max_model_len == 150 and cfg.dtype == "bfloat16"


@pytest.mark.parametrize(
    "sampling, prompts, message",
    [
        (SamplingConfig(n=0), [[1]], "sampling.n"),
        (SamplingConfig(max_new_tokens=0), [[1]], "max_new_tokens"),
        (SamplingConfig(temperature=-1), [[1]], "temperature"),
        (SamplingConfig(top_p=0), [[1]], "top_p"),
        (SamplingConfig(stop=[""]), [[1]], "stop"),
        (SamplingConfig(), [[1], []], "prompt 1 has no tokens"),
        (SamplingConfig(), [[1, -3]], "prompt 0 has invalid token ids"),
    ],
)
def test_bad_requests_are_rejected_naming_the_field(sampling, prompts, message):
    with pytest.raises(ValueError, match=message):
        validate_request(prompts, sampling)


# -- prompt spreading -------------------------------------------------------------------------
@pytest.mark.parametrize("items, parts", [(10, 3), (2, 4), (0, 2), (7, 1), (64, 8)])
def test_split_evenly_covers_every_item_once_in_order_with_balanced_slices(items, parts):
    spans = split_evenly(items, parts)
    assert len(spans) == parts
    covered = [i for a, b in spans for i in range(a, b)]
    assert covered == list(range(items))
    sizes = [b - a for a, b in spans]
    assert max(sizes) - min(sizes) <= 1


# -- responses --------------------------------------------------------------------------------
def test_sampled_logprobs_reads_flat_and_dict_formats():
    class Flat:  # the shape of vllm.logprobs.FlatLogprobs
        token_ids = [5, 9, 1, 2]  # position 1 has an extra entry after the sampled one
        logprobs = [-0.1, -0.2, -3.0, -0.3]
        start_indices = [0, 1, 3]
        end_indices = [1, 3, 4]

        def __len__(self):
            return 3

    toks = [5, 9, 2]
    assert sampled_logprobs(toks, Flat()) == [-0.1, -0.2, -0.3]
    as_dicts = [
        {t: SimpleNamespace(logprob=lp)} for t, lp in zip(toks, [-1.0, -2.0, -0.5], strict=True)
    ]
    assert sampled_logprobs(toks, as_dicts) == [-1.0, -2.0, -0.5]


def test_sampled_logprobs_fails_loudly_when_vllm_returns_none_or_wrong_lengths():
    with pytest.raises(RuntimeError, match="logprobs must be 0"):
        sampled_logprobs([1], None)
    with pytest.raises(RuntimeError, match="2 logprobs for 1 tokens"):
        sampled_logprobs([1], [{1: SimpleNamespace(logprob=0.0)}] * 2)
    with pytest.raises(RuntimeError, match="sampled token 7"):
        sampled_logprobs([7], [{1: SimpleNamespace(logprob=0.0)}])


def test_strip_tokens_removes_control_tokens_and_keeps_markup():
    text = "<think>2+2</think><answer>4</answer><|im_end|><|endoftext|>"
    out = strip_tokens(text, frozenset({"<|im_end|>", "<|endoftext|>"}))
    assert out == "<think>2+2</think><answer>4</answer>"


def test_completions_are_ordered_by_prompt_then_sample_with_offset_indices():
    def comp(index, reason="stop"):
        return SimpleNamespace(
            index=index,
            token_ids=[index, 1],
            text=f"s{index}<|im_end|>",
            logprobs=[{index: SimpleNamespace(logprob=-1.0)}, {1: SimpleNamespace(logprob=-2.0)}],
            finish_reason=reason,
        )

    outputs = [
        SimpleNamespace(outputs=[comp(1), comp(0)]),
        SimpleNamespace(outputs=[comp(0, "length")]),
    ]
    cs = completions_from_outputs(outputs, prompt_offset=5, strip=frozenset({"<|im_end|>"}))
    assert [(c.prompt_index, c.text) for c in cs] == [(5, "s0"), (5, "s1"), (6, "s0")]
    assert cs[2].finish_reason == "length" and cs[0].logprobs == [-1.0, -2.0]
    with pytest.raises(RuntimeError, match="abort"):
        completions_from_outputs([SimpleNamespace(outputs=[comp(0, "abort")])], 0, frozenset())


# -- weight-sync wire format ------------------------------------------------------------------
def test_pack_unpack_roundtrips_mixed_dtypes_and_sends_tied_weights_once():
    emb = torch.randn(10, 4)
    state = {
        "model.embed_tokens.weight": emb,
        "model.norm.weight": torch.randn(4).to(torch.bfloat16),
        "step": torch.tensor([3], dtype=torch.int64),
        "lm_head.weight": emb,  # tied: same storage
    }
    buf, layout = pack_weights(state)
    assert buf.dtype == torch.uint8 and buf.numel() == layout.nbytes
    assert layout.names == ["model.embed_tokens.weight", "model.norm.weight", "step"]
    assert all(off % 256 == 0 for off in layout.offsets)
    out = dict(unpack_weights(buf, WeightLayout.from_dict(layout.to_dict())))
    for name in layout.names:
        assert out[name].dtype == state[name].dtype and torch.equal(out[name], state[name])


def test_pack_casts_floating_tensors_only_when_asked():
    state = {"w": torch.randn(3, 5), "i": torch.arange(4)}
    layout, _ = plan_layout(state, dtype=torch.bfloat16)
    assert layout.dtypes == ["bfloat16", "int64"]
    buf, layout = pack_weights(state, dtype=torch.bfloat16)
    out = dict(unpack_weights(buf, layout))
    assert torch.equal(out["w"], state["w"].to(torch.bfloat16)) and torch.equal(
        out["i"], state["i"]
    )


def test_unpack_rejects_a_buffer_smaller_than_its_layout():
    buf, layout = pack_weights({"w": torch.ones(100)})
    with pytest.raises(ValueError, match="bytes"):
        unpack_weights(buf[:10], layout)


def test_sync_method_is_ipc_on_a_shared_gpu_nccl_across_gpus_else_object_store():
    assert choose_method("GPU-a", ["GPU-a", "GPU-a"]) == "cuda_ipc"
    assert choose_method("GPU-a", ["GPU-b", "GPU-c"]) == "nccl"
    assert choose_method("GPU-a", ["GPU-a", "GPU-b"]) == "object_store"
    assert choose_method(None, [None]) == "object_store"


def test_rollout_without_ray_says_to_start_it():
    import ray

    if ray.is_initialized():
        pytest.skip("a Ray cluster is already up in this session")
    with pytest.raises(RuntimeError, match="ray.init"):
        VllmRollout(VllmEngineConfig(model="/m"), num_gpus=0)


# -- the engine with vLLM replaced at its boundary --------------------------------------------
def test_engine_generates_completions_and_loads_weights_in_process(fake_vllm):
    engine = VllmEngine(VllmEngineConfig(model="/m"))
    cs = engine.generate([[10, 11], [20]], SamplingConfig(n=2, max_new_tokens=3))
    assert [(c.prompt_index, c.token_ids) for c in cs] == [
        (0, [11, 12, 13]),
        (0, [12, 13, 14]),
        (1, [20, 21, 22]),
        (1, [21, 22, 23]),
    ]
    assert cs[0].logprobs == [-0.25, -0.5, -0.75]
    assert "<think>" in cs[0].text and "<|im_end|>" not in cs[0].text
    assert "mp=0" in cs[0].text  # the engine core was asked to stay in-process

    engine.load_weights({"shift": torch.tensor([5.0])}, version=2)
    assert engine.weights_version() == 2
    again = engine.generate([[10, 11]], SamplingConfig(max_new_tokens=2))
    assert again[0].token_ids == [16, 17] and "resets=1" in again[0].text
    assert engine.param_sum("shift") == 5.0


def test_engine_holds_a_load_that_arrives_before_the_calls_made_ahead_of_it(fake_vllm):
    engine = VllmEngine(VllmEngineConfig(model="/m"))
    buffer, layout = pack_weights({"shift": torch.tensor([5.0])}, device="cpu")
    payload = {"layout": layout.to_dict(), "data": buffer.numpy()}
    engine.load_packed(payload, version=2, after_calls=1)  # one call was made before it
    assert engine.weights_version() == 0
    with pytest.raises(KeyError):  # not loaded yet
        engine.param_sum("shift")
    first = engine.generate([[10]], SamplingConfig(max_new_tokens=2))
    assert first[0].token_ids == [10, 11] and first[0].weights_version == 0  # old weights
    assert engine.weights_version() == 2 and engine.param_sum("shift") == 5.0
    again = engine.generate([[10]], SamplingConfig(max_new_tokens=2))
    assert again[0].token_ids == [15, 16] and again[0].weights_version == 2


def test_rollout_spreads_prompts_over_replica_actors_and_syncs_weights_through_the_store(
    ray_cluster, fake_vllm_dir
):
    import os

    path = os.pathsep.join([str(fake_vllm_dir), os.environ.get("PYTHONPATH", "")])
    rollout = VllmRollout(
        VllmEngineConfig(model="/m"),
        replicas=2,
        num_gpus=0,
        num_cpus=0,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
        start_timeout_s=120,
        call_timeout_s=120,
    )
    try:
        prompts = [[1], [2], [3], [4], [5]]
        cs = rollout.generate(prompts, SamplingConfig(n=2, max_new_tokens=2, seed=7))
        assert [c.prompt_index for c in cs] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
        # Prompts 0-2 went to one replica, 3-4 to the other; seeds follow the global index.
        assert all("batch=3" in c.text for c in cs[:6]) and all("batch=2" in c.text for c in cs[6:])
        assert "seed=13" in cs[6].text  # prompt 3: 7 + 3 * n
        assert cs[6].token_ids == [4, 5]

        with pytest.raises(ValueError, match="prompt 1 has 64 tokens"):
            rollout.generate([[1], [1] * 64], SamplingConfig())

        rollout.load_weights({"shift": torch.tensor([10.0]), "other": torch.zeros(3)}, version=4)
        assert rollout.weights_version() == 4
        after = rollout.generate(prompts, SamplingConfig(max_new_tokens=1))
        assert [c.token_ids for c in after] == [[11], [12], [13], [14], [15]]
        assert all("resets=1" in c.text for c in after)

        # The learner-side sender, through the object store (no GPU here).
        sender = WeightSender(rollout.replicas.engines, method="auto", timeout_s=120)
        assert sender.method == "object_store"
        stats = sender.push({"shift": torch.tensor([-1.0])}, version=5)
        assert stats["bytes"] > 0 and stats["total_s"] >= 0
        assert rollout.weights_version() == 5
        assert rollout.generate([[1]], SamplingConfig(max_new_tokens=1))[0].token_ids == [0]
        with pytest.raises(ValueError, match="cuda_ipc"):
            WeightSender(rollout.replicas.engines, method="cuda_ipc", timeout_s=60)
    finally:
        rollout.shutdown()
