"""Shared fixtures: one small local Ray cluster per test session, GPU/docker skips, a small
random model for the engine and learner tests."""

from __future__ import annotations

import json
import os
import string
from pathlib import Path

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


# -- engine and learner tests (tests/rollout, tests/train): a small random Qwen2 ---------------
# Built in a temp directory once per session (a few seconds), so those tests do not depend on
# the tiny-model builder's warm start. The chat template and special tokens match the ones the
# product's tiny models use; a character-level tokenizer keeps the vocabulary small.
SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_random_model(out: Path, hidden: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """A random Qwen2 causal LM + character-level tokenizer saved as an HF directory."""
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for c in sorted(set(string.digits + string.ascii_letters + " +-*/=()<>.,:?!\n_'\"[]{}#%&;|")):
        vocab.setdefault(c, len(vocab))
    vocab["<unk>"] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.add_special_tokens(SPECIALS)
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    cfg_file = out / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_file.write_text(json.dumps(cfg))
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(vocab),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        bos_token_id=None,
    )
    Qwen2ForCausalLM(config).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def random_model_dir(tmp_path_factory) -> Path:
    return build_random_model(tmp_path_factory.mktemp("random_qwen2"))
