"""Prompt templates: a record's prompt turned into chat messages, then into the model's text.

``think`` adds a system prompt that asks for the reasoning inside ``<think>…</think>`` and
the final answer inside ``<answer>…</answer>`` (what the ``math``, ``countdown`` and
``think_format`` verifiers read); ``plain`` sends the prompt alone. The text comes from
the tokenizer's own chat template, so any chat model gets its native markup.
"""

from __future__ import annotations

from typing import Any

from rlvr.data.records import PromptRecord

THINK_SYSTEM_PROMPT = (
    "Think step by step inside <think> </think> tags, "
    "then give the final answer inside <answer> </answer> tags."
)

TEMPLATES: dict[str, str | None] = {"think": THINK_SYSTEM_PROMPT, "plain": None}


def build_messages(record: PromptRecord | str, template: str = "think") -> list[dict[str, str]]:
    """The chat messages (system prompt if the template has one, then the user's prompt)."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown prompt template {template!r}; known: {', '.join(TEMPLATES)}")
    prompt = record.prompt if isinstance(record, PromptRecord) else record
    system = TEMPLATES[template]
    messages = [{"role": "system", "content": system}] if system else []
    return [*messages, {"role": "user", "content": prompt}]


def render_prompt(tokenizer: Any, record: PromptRecord | str, template: str = "think") -> str:
    """The full prompt text, ending where the assistant's reply begins.

    Uses ``tokenizer.apply_chat_template(messages, add_generation_prompt=True)``. Two
    fallbacks keep any HF model usable: a chat template that rejects the system role gets
    the system prompt at the top of the user's message, and a tokenizer without a chat
    template gets plain ``System:/User:/Assistant:`` text.
    """
    messages = build_messages(record, template)
    if getattr(tokenizer, "chat_template", None) is None:
        parts = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
        return "\n\n".join([*parts, "Assistant:"])
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as exc:  # jinja2 TemplateError: e.g. "System role not supported"
        if messages[0]["role"] != "system" or "system" not in str(exc).lower():
            raise
        merged = [
            {"role": "user", "content": f"{messages[0]['content']}\n\n{messages[1]['content']}"}
        ]
        return tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True)
