"""``tiny:tools``'s warm-start data: replies written exactly as the rollout protocol writes
them, with the tool's output masked out of the loss (it is context, not an action).

No build here (fast); tests/train/test_e2e_tools.py builds the model and trains it.
"""

from __future__ import annotations

import pytest

from rlvr.data import arithmetic
from rlvr.models import tiny, tiny_tools
from rlvr.models.resolve import ModelNotFoundError, tiny_model_dir_name
from rlvr.tools.calculator import CalculatorTool
from rlvr.tools.protocol import Protocol
from verifiers import get_verifier

PROBLEM = arithmetic.ArithmeticProblem(123, "*", 456)


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import AddedToken

    texts = [
        tiny_tools._prompt_text(p.prompt(), "plain") + "".join(s for s, _ in reply)
        for p in arithmetic.generate(200, digits=3, ops="*")
        for reply in (tiny_tools.tool_reply(p), tiny_tools.direct_reply(p))
    ]
    tok = tiny.train_tokenizer(texts, 320)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in tiny_tools.TOOL_TOKENS])
    return tok


def test_a_tool_reply_is_a_call_the_protocol_runs_and_the_verifier_accepts():
    reply = tiny_tools.tool_reply(PROBLEM)
    call_text, output_text, answer_text = (text for text, _ in reply)
    assert [is_model for _, is_model in reply] == [True, False, True]
    call = Protocol().find_call(call_text)  # the protocol's default markers
    assert call is not None and call.name == "calculator" and call.code == "123*456"
    result = CalculatorTool().run(call.code, 1.0)
    assert output_text == Protocol().wrap_output(result.output) == "<output>56088\n</output>"
    verdict = get_verifier("math").verify("".join(t for t, _ in reply), "56088")
    assert verdict.score == 1.0
    assert tiny_tools.direct_reply(PROBLEM) == [("<answer>56088</answer>", True)]


def test_markers_are_single_tokens_so_a_call_is_one_decision(tokenizer):
    for marker in tiny_tools.TOOL_TOKENS:
        assert len(tokenizer(marker, add_special_tokens=False)["input_ids"]) == 1, marker


def test_the_tool_output_and_the_prompt_are_masked_out_of_the_loss(tokenizer):
    prompt = tiny_tools._prompt_text(PROBLEM.prompt(), "plain")
    ids, train = tiny_tools.encode_reply(tokenizer, prompt, tiny_tools.tool_reply(PROBLEM))
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    output_ids = tokenizer("<output>56088\n</output>", add_special_tokens=False)["input_ids"]
    assert not any(train[:n_prompt])
    assert ids[-1] == tokenizer.eos_token_id and train[-1]
    # the output block is exactly what the rollout appends, and none of it is trained on
    masked = [i for i, (t, on) in enumerate(zip(ids, train, strict=True)) if not on]
    assert [ids[i] for i in masked[n_prompt:]] == output_ids
    trained = tokenizer.decode([t for t, on in zip(ids, train, strict=True) if on])
    assert trained == '<tool name="calculator">123*456</tool>\n<answer>56088</answer><|im_end|>'

    _, _, labels = tiny._sft_batch([(ids, train), (ids[:5], train[:5])], 0)
    assert labels[0].tolist() == [t if on else -100 for t, on in zip(ids, train, strict=True)]
    assert labels[1].tolist() == [-100] * len(ids)  # the short row: prompt and padding only


def test_tiny_tools_has_its_own_cache_key_and_cpu_size_only():
    names = {tiny_model_dir_name(f"tiny:{t}") for t in ("arithmetic", "countdown", "tools")}
    assert len(names) == 3
    assert tiny_model_dir_name("tiny:tools").startswith("tiny-tools-cpu-s0-")
    assert tiny_model_dir_name("tiny:tools?seed=1") != tiny_model_dir_name("tiny:tools")
    with pytest.raises(ModelNotFoundError, match="size 'cpu' only"):
        tiny_model_dir_name("tiny:tools?size=gpu")
    with pytest.raises(ModelNotFoundError, match="known: arithmetic, countdown, tools"):
        tiny_model_dir_name("tiny:multiply")


def test_the_mix_trains_only_the_decision_of_a_direct_answer(tokenizer):
    """In the mixed stage a direct answer teaches its first token (``<answer>``) only: the
    digits of a product are never trained, so they cannot pull the tokens after
    ``<answer>`` away from copying the tool's output."""
    problems = arithmetic.generate(400, digits=3, ops="*")
    mix = tiny_tools._replies(tiny_tools.default_recipe(), problems, 0.3)
    calls = [reply for reply, _ in mix if reply[0][0].startswith(tiny_tools.CALL_OPEN)]
    assert 0.2 < len(calls) / len(mix) < 0.4
    direct = next((reply, eos) for reply, eos in mix if not eos)
    assert direct == ([("<answer>", True)], False)
    prompt = tiny_tools._prompt_text(PROBLEM.prompt(), "plain")
    ids, train = tiny_tools.encode_reply(tokenizer, prompt, *direct)
    assert ids[-1] == tokenizer.convert_tokens_to_ids("<answer>") and train.count(True) == 1
    assert train[-1]
