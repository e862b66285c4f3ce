"""The learner's shared prompt forward (``model.share_prompt_forward``): each distinct prompt
of a micro-batch is forwarded once and its completions attend to its cached keys/values.
It must give the logprobs, entropies and gradients of the full forward, on a batch with
groups of unequal size and prompts of unequal length (left padding), for Qwen2 and Llama,
with LoRA, and fall back to the full forward where nothing repeats."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlvr.models.causal_lm import PolicyModel
from rlvr.rollout.base import Completion
from rlvr.train.batch import make_train_batch


def _grouped_batch(groups: list[int], seed: int = 0, preamble: int = 0) -> dict[str, torch.Tensor]:
    """``len(groups)`` prompts of different lengths, ``groups[i]`` completions of prompt i;
    every prompt starts with the same ``preamble`` tokens (a template's system prompt)."""
    rng = np.random.default_rng(seed)
    start = rng.integers(7, 60, preamble).tolist()
    prompts = [start + rng.integers(7, 60, 3 + 2 * i).tolist() for i in range(len(groups))]
    comps = []
    for i, size in enumerate(groups):
        for _ in range(size):
            n = int(rng.integers(2, 12))
            comps.append(Completion(i, rng.integers(7, 60, n).tolist(), "", [-1.0] * n, "stop"))
    adv = rng.normal(size=len(comps)).astype(np.float32)
    return {k: torch.as_tensor(v) for k, v in make_train_batch(prompts, comps, adv, 0).items()}


def _llama_dir(tmp_path_factory, random_model_dir):
    """The random Qwen2 model's tokenizer with a random Llama of the same vocabulary."""
    import shutil

    from transformers import AutoConfig, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("random_llama")
    for f in random_model_dir.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(f, out / f.name)
    qwen = AutoConfig.from_pretrained(random_model_dir)
    torch.manual_seed(1)
    config = LlamaConfig(
        vocab_size=qwen.vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=qwen.eos_token_id,
        pad_token_id=qwen.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    return out


@pytest.fixture(scope="module", params=["qwen2", "llama"])
def model_dir(request, tmp_path_factory, random_model_dir):
    if request.param == "qwen2":
        return random_model_dir
    return _llama_dir(tmp_path_factory, random_model_dir)


def _forward_and_grads(model: PolicyModel, batch: dict[str, torch.Tensor]):
    model.zero_grad(set_to_none=True)
    out = model.forward_train(batch)
    mask = batch["response_mask"]
    # a loss that weighs every position differently, so a misplaced row or column shows
    weights = torch.linspace(-1.0, 1.0, mask.numel()).reshape(mask.shape)
    (out["logprobs"] * mask * weights).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


def _same(a, b, mask):
    assert torch.allclose(a["logprobs"] * mask, b["logprobs"] * mask, atol=2e-5)
    assert torch.allclose(a["entropy"] * mask, b["entropy"] * mask, atol=2e-5)


def _same_grads(ga, gb):
    assert ga.keys() == gb.keys() and ga
    for name in ga:
        assert torch.allclose(ga[name], gb[name], rtol=1e-4, atol=1e-5), name


def test_shared_prompt_forward_gives_the_full_forwards_logprobs_and_gradients(model_dir):
    batch = _grouped_batch([3, 1, 4, 2])  # one prompt appears once: mixed sharing
    full = PolicyModel(str(model_dir), share_prompt_forward=False)
    shared = PolicyModel(str(model_dir), share_prompt_forward=True)
    a, ga = _forward_and_grads(full, batch)
    b, gb = _forward_and_grads(shared, batch)
    _same(a, b, batch["response_mask"])
    _same_grads(ga, gb)


def test_each_distinct_prompt_is_forwarded_once(random_model_dir, forward_shapes):
    batch = _grouped_batch([3, 1, 4, 2])
    model = PolicyModel(str(random_model_dir))
    shapes = forward_shapes(model.lm)
    model.forward_train(batch)
    rows, width = batch["input_ids"].shape
    r = batch["response_mask"].shape[1]
    # the 4 prompts once, then every row's response (all but its last token)
    assert shapes == [(4, width - r), (rows, r - 1)]


def test_a_preamble_every_prompt_starts_with_is_forwarded_once(model_dir, forward_shapes):
    batch = _grouped_batch([3, 1, 4, 2, 3], seed=5, preamble=12)  # prompts of 5 lengths
    full = PolicyModel(str(model_dir), share_prompt_forward=False)
    shared = PolicyModel(str(model_dir), share_prompt_forward=True)
    a, ga = _forward_and_grads(full, batch)
    shapes = forward_shapes(shared.lm)
    b, gb = _forward_and_grads(shared, batch)
    _same(a, b, batch["response_mask"])
    _same_grads(ga, gb)
    rows, width = batch["input_ids"].shape
    r = batch["response_mask"].shape[1]
    # (5 prompts sharing 12 tokens: 48 positions spared) the preamble once, each prompt's
    # rest once, then every row's response
    assert shapes == [(1, 12), (5, width - r - 12), (rows, r - 1)]


def test_a_short_preamble_is_not_forwarded_apart(random_model_dir, forward_shapes):
    batch = _grouped_batch([3, 1, 4, 2], preamble=4)  # 12 positions spared: not worth a forward
    model = PolicyModel(str(random_model_dir))
    shapes = forward_shapes(model.lm)
    model.forward_train(batch)
    rows, width = batch["input_ids"].shape
    assert shapes == [
        (4, width - batch["response_mask"].shape[1]),
        (rows, batch["response_mask"].shape[1] - 1),
    ]


def test_a_batch_without_repeated_prompts_takes_the_full_forward(random_model_dir, forward_shapes):
    batch = _grouped_batch([1, 1, 1])
    model = PolicyModel(str(random_model_dir))
    shapes = forward_shapes(model.lm)
    model.forward_train(batch)
    assert shapes == [tuple(batch["input_ids"].shape)]


def test_lora_and_its_kl_to_the_base_share_prompts_with_the_same_result(random_model_dir):
    lora = {"rank": 4, "alpha": 8.0, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    batch = _grouped_batch([2, 3, 2], seed=3)
    kw = dict(lora=lora, ref_path=str(random_model_dir))  # the KL reference: adapters off
    torch.manual_seed(0)
    full = PolicyModel(str(random_model_dir), share_prompt_forward=False, **kw)
    torch.manual_seed(0)
    shared = PolicyModel(str(random_model_dir), share_prompt_forward=True, **kw)
    with torch.no_grad():  # a non-zero adapter, the same in both
        for m in (full, shared):
            for n, p in m.named_parameters():
                if "lora_B" in n:
                    p.copy_(torch.full_like(p, 0.05))
    a, ga = _forward_and_grads(full, batch)
    b, gb = _forward_and_grads(shared, batch)
    _same(a, b, batch["response_mask"])
    mask = batch["response_mask"]
    assert torch.allclose(a["ref_logprobs"] * mask, b["ref_logprobs"] * mask, atol=2e-5)
    _same_grads(ga, gb)


def test_activation_checkpointing_turns_sharing_off(random_model_dir, forward_shapes):
    batch = _grouped_batch([3, 3])
    model = PolicyModel(str(random_model_dir), gradient_checkpointing=True)
    shapes = forward_shapes(model.lm)
    out = model.forward_train(batch)
    assert shapes == [tuple(batch["input_ids"].shape)]
    assert out["logprobs"].requires_grad


@pytest.mark.gpu
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_shared_prompt_forward_on_a_gpu_under_the_learners_autocast(random_model_dir, attn):
    from rlvr.models.causal_lm import precision

    # (a 20-token preamble: forwarded once, 40 positions spared)
    batch = {k: v.cuda() for k, v in _grouped_batch([4, 2, 3], seed=7, preamble=20).items()}
    autocast = precision("auto", "cuda", trained=True).autocast
    outs = []
    for share in (False, True):
        model = PolicyModel(
            str(random_model_dir), attn_implementation=attn, share_prompt_forward=share
        ).cuda()
        with autocast():
            outs.append(model.forward_train(batch))
    mask = batch["response_mask"]
    diff = ((outs[0]["logprobs"] - outs[1]["logprobs"]).abs() * mask).max()
    assert float(diff) < 0.05  # bf16 compute: rounding, not a misplaced row (those are O(1))
