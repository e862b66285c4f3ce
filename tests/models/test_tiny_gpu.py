"""The tiny models on a GPU: vLLM loads them and decodes them as transformers does.

Skipped without CUDA (conftest) or without vLLM; runs on a CUDA machine (docs/gpu.md has
how to bring vLLM there).
"""

from __future__ import annotations

import importlib.util
import os

import pytest

from rlvr.data import load_prompts, render_prompt
from rlvr.models import resolve_model
from rlvr.models.tiny import _is_correct, greedy_completions

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vLLM"),
]


@pytest.fixture(scope="module")
def tiny_llm():
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # engine core in-process
    from vllm import LLM

    path = resolve_model("tiny:arithmetic")
    llm = LLM(
        model=str(path),
        dtype="bfloat16",
        enforce_eager=True,
        gpu_memory_utilization=0.1,
        max_model_len=512,
        seed=0,
    )
    yield path, llm
    del llm


def test_vllm_greedy_accuracy_matches_transformers(tiny_llm):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from vllm import SamplingParams

    path, llm = tiny_llm
    tokenizer = AutoTokenizer.from_pretrained(path)
    records = load_prompts("builtin:arithmetic?n=300&seed=7&split=test")
    prompts = [render_prompt(tokenizer, r, "think") for r in records]
    outs = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=64))
    vllm_texts = [o.outputs[0].text for o in outs]
    assert all(o.outputs[0].finish_reason == "stop" for o in outs[:50])  # eos = <|im_end|>
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).cuda()
    hf_texts = greedy_completions(model, tokenizer, prompts)
    acc = {
        name: sum(
            _is_correct("arithmetic", t, r.reference) for t, r in zip(texts, records, strict=True)
        )
        / len(records)
        for name, texts in (("vllm", vllm_texts), ("hf", hf_texts))
    }
    assert acc["hf"] >= 0.4 and abs(acc["vllm"] - acc["hf"]) <= 0.10, acc
    same = sum(a == b for a, b in zip(vllm_texts, hf_texts, strict=True)) / len(records)
    assert same >= 0.8, same  # bf16 vs fp32: a few greedy paths may part ways


def test_vllm_accepts_prompts_outside_the_training_text(tiny_llm):
    from vllm import SamplingParams

    _, llm = tiny_llm
    outs = llm.generate(
        ["Zebra quiz: jump!", "ÿ ∑ 漢字"], SamplingParams(temperature=0.0, max_tokens=8)
    )
    assert all(len(o.prompt_token_ids) > 0 and o.outputs[0].token_ids for o in outs)
