"""The memory model against numbers computed here: parameter counts of real Qwen2 models
built on the meta device, and the byte formulas by hand."""

from __future__ import annotations

import pytest

from rlvr.plan.memory import (
    QWEN25,
    VLLM_OVERHEAD_BYTES,
    GiB,
    ModelShape,
    engine_memory,
    kv_bytes_per_token,
    learner_memory,
    lora_param_count,
    param_count,
    qwen25_shape,
)


def _meta_model(s: ModelShape):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        hidden_size=s.hidden, num_hidden_layers=s.layers, num_attention_heads=s.heads,
        num_key_value_heads=s.kv_heads, intermediate_size=s.intermediate, vocab_size=s.vocab,
        tie_word_embeddings=s.tie_embeddings,
    )  # fmt: skip
    with torch.device("meta"):
        return Qwen2ForCausalLM(config)


@pytest.mark.parametrize("name", sorted(QWEN25))
def test_param_count_matches_qwen2_built_on_the_meta_device(name):
    model = _meta_model(QWEN25[name])
    assert param_count(QWEN25[name]) == sum(p.numel() for p in model.parameters())


def test_qwen25_table_gives_the_published_sizes():
    published_billions = {"0.5B": 0.49, "1.5B": 1.54, "3B": 3.09, "7B": 7.62, "14B": 14.77,
                          "32B": 32.76, "72B": 72.71}  # fmt: skip
    for size, billions in published_billions.items():
        assert param_count(QWEN25[f"Qwen2.5-{size}"]) / 1e9 == pytest.approx(billions, abs=0.01)


def test_lora_param_count_matches_peft_on_the_meta_device():
    from peft import LoraConfig, get_peft_model

    shape = QWEN25["Qwen2.5-0.5B"]
    targets = ["q_proj", "v_proj", "down_proj"]
    peft_model = get_peft_model(_meta_model(shape), LoraConfig(r=8, target_modules=targets))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert lora_param_count(shape, 8, targets) == trainable


def test_lora_rejects_an_unknown_module():
    with pytest.raises(ValueError, match="unknown LoRA target"):
        lora_param_count(QWEN25["Qwen2.5-0.5B"], 8, ["qkv"])


def test_full_fine_tuning_holds_16_bytes_per_parameter_plus_the_bf16_copy():
    s = QWEN25["Qwen2.5-1.5B"]
    p = param_count(s)
    m = learner_memory(s, micro_batch_tokens=0)
    assert (m.weights, m.gradients, m.optimizer) == (6 * p, 4 * p, 8 * p)
    assert m.activations == 0 and m.reference == 0


def test_lora_trains_only_the_adapters_and_keeps_the_base_in_bf16():
    s = QWEN25["Qwen2.5-7B"]
    p, a = param_count(s), lora_param_count(s, 16, ["q_proj", "v_proj"])
    m = learner_memory(s, micro_batch_tokens=0, lora_params=a, kl_reference=True)
    assert m.weights == 4 * a + 2 * p + 2 * a
    assert (m.gradients, m.optimizer) == (4 * a, 8 * a)
    assert m.reference == 0  # the reference is the base with adapters off


def test_sharding_divides_the_state_but_not_the_activations():
    s = QWEN25["Qwen2.5-7B"]
    one = learner_memory(s, micro_batch_tokens=4096, shards=1, kl_reference=True)
    four = learner_memory(s, micro_batch_tokens=4096, shards=4, kl_reference=True)
    for part in ("weights", "gradients", "optimizer", "reference"):
        assert getattr(four, part) == -(-getattr(one, part) // 4)
    assert four.activations == one.activations


def test_activations_scale_with_tokens_and_checkpointing_keeps_one_value_per_layer():
    s = ModelShape(hidden=64, layers=10, heads=4, kv_heads=2, intermediate=128, vocab=100)
    full = learner_memory(s, micro_batch_tokens=100).activations
    assert full == 100 * (10 * 64 * 34 + 100 * 4 * 2)
    ckpt = learner_memory(s, micro_batch_tokens=100, gradient_checkpointing=True).activations
    assert ckpt == 100 * (10 * 64 * 2 + 64 * 34 + 100 * 4 * 2)
    assert learner_memory(s, micro_batch_tokens=200).activations == 2 * full


def test_cpu_precision_is_fp32_without_a_compute_copy_or_cuda_overhead():
    s = QWEN25["Qwen2.5-0.5B"]
    m = learner_memory(s, micro_batch_tokens=0, bf16=False)
    assert m.weights == 4 * param_count(s) and m.overhead == 0


def test_kv_cache_per_token_is_two_times_layers_kv_heads_head_dim_dtype():
    s = QWEN25["Qwen2.5-7B"]  # 28 layers, 4 kv heads of 128
    assert kv_bytes_per_token(s) == 2 * 28 * 4 * 128 * 2
    assert kv_bytes_per_token(s, tensor_parallel=2) == 2 * 28 * 2 * 128 * 2
    assert kv_bytes_per_token(s, tensor_parallel=8) == 2 * 28 * 1 * 128 * 2  # replicated


def test_engine_kv_cache_is_what_the_budget_leaves():
    s = QWEN25["Qwen2.5-0.5B"]
    e = engine_memory(s, gpu_memory_bytes=80 * 10**9, gpu_memory_utilization=0.5,
                      max_seq_tokens=1024)  # fmt: skip
    assert e.budget == 40 * 10**9
    assert e.kv_cache == 40 * 10**9 - 2 * param_count(s) - VLLM_OVERHEAD_BYTES
    assert e.kv_tokens == e.kv_cache // (2 * 24 * 2 * 64 * 2)
    assert e.total == e.budget
    small = engine_memory(s, gpu_memory_bytes=4 * GiB, gpu_memory_utilization=0.3,
                          max_seq_tokens=1024)  # fmt: skip
    assert small.kv_cache < 0 and small.kv_tokens == 0


def test_hub_ids_find_their_shape():
    assert qwen25_shape("Qwen/Qwen2.5-7B-Instruct") is QWEN25["Qwen2.5-7B"]
    assert qwen25_shape("Qwen2.5-0.5B") is QWEN25["Qwen2.5-0.5B"]
    assert qwen25_shape("meta-llama/Llama-3-8B") is None
