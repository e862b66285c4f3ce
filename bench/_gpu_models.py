"""Random-init models with Qwen2.5 shapes and a local tokenizer, for GPU benchmarks and tests.

Nothing is downloaded: the tokenizer is a word-level vocabulary (``w7``, ``w8``, … plus the
chat/markup special tokens) of the model's full vocabulary size, so every id a random model
samples decodes, and the model is a ``transformers`` Qwen2 built from a config with random
weights, saved with ``save_pretrained`` (loadable by transformers and vLLM alike).

Throughput depends on shapes, not on what the weights know, so a random 0.5B-shape model
measures what a trained Qwen2.5-0.5B would (with ``ignore_eos``: lengths are fixed).

    path = build_model_dir("qwen2.5-0.5b", "/tmp/m05")
    prompts = random_prompts(256, 128, vocab_size=SHAPES["qwen2.5-0.5b"]["vocab_size"])

Also :class:`HfWeightHolder`, a Ray actor body standing in for a GPU learner in the sync
benchmark and the GPU tests: it holds an HF model on its GPU and pushes the weights to rollout
engines with :class:`rlvr.rollout.weight_sync.WeightSender`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rlvr.models.tiny import IM_END, IM_START, MARKUP_TOKENS, PAD
from rlvr.plan.memory import QWEN25, ModelShape

# The tiny models' chat and markup tokens, then <unk>.
SPECIAL_TOKENS = [PAD, IM_START, IM_END, *MARKUP_TOKENS, "<unk>"]


def qwen2_config_kwargs(shape: ModelShape) -> dict[str, Any]:
    """``Qwen2Config`` keyword arguments of a shape from the memory model."""
    return dict(
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        vocab_size=shape.vocab,
        tie_word_embeddings=shape.tie_embeddings,
    )


# The released Qwen2.5 shapes (rlvr.plan.memory.QWEN25, from their config.json); "tiny" is
# for tests: a few M parameters, head_dim 64 like the real ones.
SHAPES: dict[str, dict[str, Any]] = {
    "qwen2.5-0.5b": qwen2_config_kwargs(QWEN25["Qwen2.5-0.5B"]),
    "qwen2.5-1.5b": qwen2_config_kwargs(QWEN25["Qwen2.5-1.5B"]),
    "tiny": qwen2_config_kwargs(ModelShape(256, 2, 4, 2, 512, 1024, tie_embeddings=True)),
}


def build_tokenizer(vocab_size: int):
    """A word-level fast tokenizer with exactly ``vocab_size`` tokens (special ones first)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must exceed {len(SPECIAL_TOKENS)}, got {vocab_size}")
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    vocab.update({f"w{i}": i for i in range(len(SPECIAL_TOKENS), vocab_size)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # words joined by spaces
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=PAD,
        unk_token="<unk>",
        additional_special_tokens=SPECIAL_TOKENS[1:2] + SPECIAL_TOKENS[3:7],
    )


def build_model_dir(
    shape: str,
    out_dir: str | Path,
    seed: int = 0,
    logit_scale: float = 1.0,
    device: str | None = None,
    max_position_embeddings: int = 4096,
) -> Path:
    """Write a random-init Qwen2 model (bf16) + tokenizer to ``out_dir``; returns the path.

    ``logit_scale`` multiplies the final norm's weight, i.e. every logit: at 1 a random model
    is nearly uniform over its vocabulary; tests use ~20 so that temperature and the choice
    of weights visibly change the distribution.
    """
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {sorted(SHAPES)}, got {shape!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = SHAPES[shape]
    tokenizer = build_tokenizer(s["vocab_size"])
    config = Qwen2Config(
        **s,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tokenizer.convert_tokens_to_ids(PAD),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        model.model.norm.weight.mul_(logit_scale)
    model.to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def random_prompts(num: int, length: int, vocab_size: int, seed: int = 0) -> list[list[int]]:
    """``num`` prompts of ``length`` random word-token ids (no special tokens)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(len(SPECIAL_TOKENS), vocab_size, (num, length), generator=g)
    return ids.tolist()


class HfWeightHolder:
    """A stand-in GPU learner (Ray actor body): an HF model on this actor's GPU whose weights
    are pushed to rollout engines with ``WeightSender``."""

    def __init__(self, model_dir: str, norm_scale: float = 1.0) -> None:
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).cuda()
        with torch.no_grad():
            self.model.model.norm.weight.mul_(norm_scale)
        self.senders: dict[str, Any] = {}

    def param_sum(self, name: str) -> float:
        return float(dict(self.model.named_parameters())[name].float().sum())

    def perturb(self, scale: float) -> None:
        """Change the weights (so each sync moves new values): norm weight *= scale."""
        with torch.no_grad():
            self.model.model.norm.weight.mul_(scale)

    def push(self, engines: list[Any], method: str, version: int, timeout_s: float = 300) -> dict:
        """One sync with ``method``; the sender (and its pinned buffer / NCCL group) is kept."""
        from rlvr.rollout.weight_sync import WeightSender

        if method not in self.senders:
            self.senders[method] = WeightSender(engines, method=method, timeout_s=timeout_s)
        sender = self.senders[method]
        stats = sender.push(self.model.state_dict(), version)
        stats["method"] = sender.method
        return stats
