"""Prompt templates rendered through whatever chat template the tokenizer has."""

from __future__ import annotations

import pytest

from rlvr.data import THINK_SYSTEM_PROMPT, PromptRecord, build_messages, render_prompt


def _tokenizer(chat_template: str | None):
    """A real transformers tokenizer (the tiny models' kind) with the given chat template."""
    from rlvr.models.tiny import train_tokenizer

    tok = train_tokenizer(["What is 2 + 2?"] * 4, vocab_size=280)
    tok.chat_template = chat_template
    return tok


_NO_SYSTEM = (  # Gemma-style: rejects the system role
    "{% for m in messages %}{% if m['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "<turn>{{ m['role'] }}: {{ m['content'] }}</turn>{% endfor %}"
    "{% if add_generation_prompt %}<turn>assistant: {% endif %}"
)


def test_think_template_asks_for_think_then_answer_tags():
    msgs = build_messages(PromptRecord("What is 2 + 2?", "4"), "think")
    assert msgs[0] == {"role": "system", "content": THINK_SYSTEM_PROMPT}
    assert "<think>" in THINK_SYSTEM_PROMPT and "<answer>" in THINK_SYSTEM_PROMPT
    assert THINK_SYSTEM_PROMPT.index("<think>") < THINK_SYSTEM_PROMPT.index("<answer>")
    assert msgs[1] == {"role": "user", "content": "What is 2 + 2?"}
    assert build_messages("hi", "plain") == [{"role": "user", "content": "hi"}]


def test_unknown_template_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown prompt template 'cot'; known: think, plain"):
        build_messages("hi", "cot")


def test_template_without_system_role_gets_the_system_prompt_in_the_user_turn():
    text = render_prompt(_tokenizer(_NO_SYSTEM), PromptRecord("2+2?", "4"), "think")
    assert text == f"<turn>user: {THINK_SYSTEM_PROMPT}\n\n2+2?</turn><turn>assistant: "


def test_tokenizer_without_chat_template_gets_plain_text():
    text = render_prompt(_tokenizer(None), PromptRecord("2+2?", "4"), "think")
    assert text == f"System: {THINK_SYSTEM_PROMPT}\n\nUser: 2+2?\n\nAssistant:"
