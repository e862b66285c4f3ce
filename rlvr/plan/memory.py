"""The memory model: bytes a learner and a rollout engine need, from a model's shape.

Pure arithmetic (no torch, no Ray), so a plan is computed before anything starts. Every
constant below is a documented estimate; ``tests/plan/test_memory.py`` checks the parameter
counts against ``Qwen2ForCausalLM`` built on the meta device.

Learner, per GPU (``shards`` = how many learners share one copy of the state, FSDP-style;
1 = every learner holds everything, as DDP does today):

- weights: trainable in fp32 (the master copy) + frozen in the compute dtype (a LoRA base),
  plus under bf16 the autocast copy of the trainable weights (2 bytes each);
- gradients: fp32, trainable parameters only; optimizer: AdamW's two fp32 moments;
- reference: a frozen copy of the model when ``kl_coef > 0`` without LoRA (under LoRA the
  reference is the same model with its adapters disabled);
- activations of one micro-batch: ``tokens x hidden x layers x ACT_BYTES_PER_HIDDEN``
  (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer
  Models": 34 bytes per hidden unit per token per layer in 16-bit with a fused attention
  kernel, i.e. 17 stored values); with gradient checkpointing only each layer's input (one
  value) plus one layer being recomputed; plus the fp32 logits and their gradient
  (``tokens x vocab x 4 x LOGIT_COPIES``);
- overhead: CUDA context and allocator slack.

Engine (vLLM), per GPU of a tensor-parallel group: bf16 weights / tp, vLLM's own overhead
(CUDA context, CUDA graphs, sampler), and the KV cache it fills with what is left of
``gpu_memory_utilization x GPU memory``: ``2 x layers x kv_heads x head_dim x dtype bytes``
per token.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

GiB = 1024**3
ACT_BYTES_PER_HIDDEN = 34  # 16-bit, per token per layer per hidden unit (see above)
ACT_VALUES_PER_HIDDEN = ACT_BYTES_PER_HIDDEN // 2  # the same in stored values
LOGIT_COPIES = 2  # fp32 logits and their gradient (log-softmax over the vocabulary)
LEARNER_OVERHEAD_BYTES = 1 * GiB  # CUDA context + caching-allocator slack on a GPU learner
VLLM_OVERHEAD_BYTES = 2 * GiB  # CUDA context, CUDA graphs, sampler and activation peak


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a Qwen2-style decoder that decide its memory."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tie_embeddings: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


# Published configs (config.json of each Qwen/Qwen2.5-<size> on the Hugging Face hub; the
# -Instruct variants share them).
QWEN25: dict[str, ModelShape] = {
    "Qwen2.5-0.5B": ModelShape(896, 24, 14, 2, 4864, 151936, tie_embeddings=True),
    "Qwen2.5-1.5B": ModelShape(1536, 28, 12, 2, 8960, 151936, tie_embeddings=True),
    "Qwen2.5-3B": ModelShape(2048, 36, 16, 2, 11008, 151936, tie_embeddings=True),
    "Qwen2.5-7B": ModelShape(3584, 28, 28, 4, 18944, 152064),
    "Qwen2.5-14B": ModelShape(5120, 48, 40, 8, 13824, 152064),
    "Qwen2.5-32B": ModelShape(5120, 64, 40, 8, 27648, 152064),
    "Qwen2.5-72B": ModelShape(8192, 80, 64, 8, 29568, 152064),
}


def _linear_shapes(s: ModelShape) -> dict[str, tuple[int, int]]:
    """(in, out) features of each projection in one decoder layer."""
    q, kv = s.heads * s.head_dim, s.kv_heads * s.head_dim
    return {
        "q_proj": (s.hidden, q),
        "k_proj": (s.hidden, kv),
        "v_proj": (s.hidden, kv),
        "o_proj": (q, s.hidden),
        "gate_proj": (s.hidden, s.intermediate),
        "up_proj": (s.hidden, s.intermediate),
        "down_proj": (s.intermediate, s.hidden),
    }


def param_count(s: ModelShape) -> int:
    """Parameters of ``Qwen2ForCausalLM`` with this shape (q/k/v have biases, o and the MLP
    do not; two RMSNorms per layer and a final one; lm_head unless tied)."""
    linear = _linear_shapes(s)
    per_layer = sum(i * o for i, o in linear.values())
    per_layer += sum(linear[name][1] for name in ("q_proj", "k_proj", "v_proj"))  # biases
    per_layer += 2 * s.hidden
    embed = s.vocab * s.hidden
    return embed + s.layers * per_layer + s.hidden + (0 if s.tie_embeddings else embed)


def lora_param_count(s: ModelShape, rank: int, target_modules: list[str]) -> int:
    """Adapter parameters: ``rank x (in + out)`` per targeted projection per layer."""
    linear = _linear_shapes(s)
    unknown = [m for m in target_modules if m not in linear]
    if unknown:
        raise ValueError(f"unknown LoRA target module(s) {unknown}; known: {sorted(linear)}")
    return s.layers * sum(rank * sum(linear[m]) for m in dict.fromkeys(target_modules))


@dataclass(frozen=True)
class LearnerMemory:
    """Bytes one learner holds at its peak (see the module docstring)."""

    weights: int
    gradients: int
    optimizer: int
    reference: int
    activations: int
    overhead: int

    @property
    def total(self) -> int:
        return sum(asdict(self).values())

    def to_dict(self) -> dict[str, int]:
        return {**asdict(self), "total": self.total}


def activation_bytes(
    s: ModelShape, tokens: int, *, checkpointing: bool, dtype_bytes: int = 2
) -> int:
    """One micro-batch of ``tokens`` (rows x padded columns) through forward and backward."""
    per_token_layer = s.hidden * ACT_VALUES_PER_HIDDEN * dtype_bytes
    if checkpointing:  # each layer's input kept, one layer's activations live at a time
        layers = s.layers * s.hidden * dtype_bytes + per_token_layer
    else:
        layers = s.layers * per_token_layer
    return tokens * (layers + s.vocab * 4 * LOGIT_COPIES)


def learner_memory(
    s: ModelShape,
    *,
    micro_batch_tokens: int,
    lora_params: int | None = None,
    gradient_checkpointing: bool = False,
    bf16: bool = True,
    kl_reference: bool = False,
    shards: int = 1,
) -> LearnerMemory:
    """Peak bytes of one learner.

    Args:
        lora_params: adapter parameters (only they train); None: full fine-tuning.
        bf16: bf16 compute with fp32 master weights (GPU); False: everything fp32 (CPU).
        kl_reference: a frozen reference copy is kept (``kl_coef > 0`` without LoRA).
        shards: learners one copy of weights, gradients and optimizer is spread over.
    """
    if shards < 1:
        raise ValueError("shards must be >= 1")
    total = param_count(s)
    trainable = total if lora_params is None else lora_params
    frozen = 0 if lora_params is None else total
    compute = 2 if bf16 else 4
    weights = 4 * trainable + compute * frozen + (2 * trainable if bf16 else 0)
    return LearnerMemory(
        weights=-(-weights // shards),
        gradients=-(-4 * trainable // shards),
        optimizer=-(-8 * trainable // shards),
        reference=-(-compute * total // shards) if kl_reference and lora_params is None else 0,
        activations=activation_bytes(
            s, micro_batch_tokens, checkpointing=gradient_checkpointing, dtype_bytes=compute
        ),
        overhead=LEARNER_OVERHEAD_BYTES if bf16 else 0,
    )


def kv_bytes_per_token(s: ModelShape, dtype_bytes: int = 2, tensor_parallel: int = 1) -> int:
    """KV cache per token on one GPU of a tensor-parallel group (K and V of every layer;
    kv heads are split across the group, replicated when there are fewer than GPUs)."""
    kv_heads = -(-s.kv_heads // tensor_parallel)
    return 2 * s.layers * kv_heads * s.head_dim * dtype_bytes


@dataclass(frozen=True)
class EngineMemory:
    """One GPU of a vLLM engine: its budget and what fills it."""

    budget: int  # gpu_memory_utilization x the GPU's memory
    weights: int
    overhead: int
    kv_cache: int  # what is left for the KV cache (negative: does not fit)
    kv_tokens: int  # tokens that KV cache holds
    max_seq_tokens: int  # one sequence at its longest (prompt + completion)

    @property
    def total(self) -> int:
        return self.weights + self.overhead + max(self.kv_cache, 0)

    def to_dict(self) -> dict[str, int]:
        return {**asdict(self), "total": self.total}


def engine_memory(
    s: ModelShape,
    *,
    gpu_memory_bytes: int,
    gpu_memory_utilization: float,
    max_seq_tokens: int,
    tensor_parallel: int = 1,
) -> EngineMemory:
    """vLLM's use of one GPU: bf16 weights / tp + overhead, the rest of its budget KV cache."""
    budget = int(gpu_memory_bytes * gpu_memory_utilization)
    weights = -(-2 * param_count(s) // tensor_parallel)
    kv = budget - weights - VLLM_OVERHEAD_BYTES
    per_token = kv_bytes_per_token(s, tensor_parallel=tensor_parallel)
    return EngineMemory(
        budget=budget,
        weights=weights,
        overhead=VLLM_OVERHEAD_BYTES,
        kv_cache=kv,
        kv_tokens=max(kv, 0) // per_token,
        max_seq_tokens=max_seq_tokens,
    )


def qwen25_shape(name: str) -> ModelShape | None:
    """The table's shape for a Qwen2.5 id (``Qwen/Qwen2.5-7B-Instruct`` -> 7B), else None."""
    base = name.rsplit("/", 1)[-1]
    for key in sorted(QWEN25, key=len, reverse=True):
        if base == key or base.startswith(key + "-"):
            return QWEN25[key]
    return None
