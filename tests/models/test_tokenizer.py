"""The tiny models' tokenizer: every printable character encodes, chat markup is atomic."""

from __future__ import annotations

import string

import pytest

from rlvr.data import load_prompts, render_prompt
from rlvr.data.arithmetic import generate
from rlvr.models.tiny import CHAT_TEMPLATE, IM_END, MARKUP_TOKENS, PAD, _chat_text, train_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    texts = [_chat_text(p.prompt()) + p.completion() + IM_END for p in generate(300)]
    return train_tokenizer(texts, vocab_size=320)


def test_every_printable_ascii_character_round_trips(tokenizer):
    text = string.printable
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text


def test_a_prompt_of_unseen_letters_does_not_encode_to_nothing(tokenizer):
    # The corpus is arithmetic; a tokenizer trained on digits alone would drop these.
    for text in ("Zebra quiz: jump!", "ÿ ∑ 漢字", "{}[]|\\~`"):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert ids and tokenizer.decode(ids) == text


def test_chat_and_markup_tokens_are_single_tokens(tokenizer):
    for tok in (*MARKUP_TOKENS, "<|im_start|>", IM_END, PAD):
        ids = tokenizer(tok, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and tokenizer.convert_ids_to_tokens(ids) == [tok]
    assert tokenizer.eos_token == IM_END and tokenizer.pad_token == PAD
    assert tokenizer.eos_token_id != tokenizer.pad_token_id


def test_digits_are_one_token_each(tokenizer):
    ids = tokenizer("12345 + 678", add_special_tokens=False)["input_ids"]
    tokens = [t for t in tokenizer.convert_ids_to_tokens(ids) if any(c.isdigit() for c in t)]
    assert tokens == list("12345678")


def test_decoding_skips_chat_tokens_but_keeps_think_and_answer_markup(tokenizer):
    completion = "<think>7+8=15 carry 1</think>\n<answer>85</answer>"
    ids = tokenizer(completion + IM_END, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == completion


def test_chat_template_renders_system_user_and_generation_prompt(tokenizer):
    assert tokenizer.chat_template == CHAT_TEMPLATE
    record = load_prompts("builtin:arithmetic?n=1")[0]
    text = render_prompt(tokenizer, record, "think")
    assert text.startswith("<|im_start|>system\nThink step by step inside <think> </think>")
    assert f"<|im_start|>user\n{record.prompt}<|im_end|>\n" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert text == _chat_text(record.prompt)  # what the warm start trained on
    plain = render_prompt(tokenizer, record, "plain")
    assert plain == f"<|im_start|>user\n{record.prompt}<|im_end|>\n<|im_start|>assistant\n"


def test_saved_tokenizer_loads_with_autotokenizer_and_encodes_the_same(tokenizer, tmp_path):
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = render_prompt(tokenizer, "What is 47 + 38? Zebra!", "think") + "<think>7+8=15</think>"
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert loaded.eos_token == IM_END and loaded.chat_template == CHAT_TEMPLATE
