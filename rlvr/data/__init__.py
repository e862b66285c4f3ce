"""Prompts for training and evaluation: built-in generators, dataset files, prompt templates.

    >>> from rlvr.data import load_prompts, render_prompt
    >>> records = load_prompts("builtin:arithmetic?n=2000&seed=0&digits=2&ops=+-")
    >>> records[0].prompt, records[0].reference      # ('What is 47 + 38?', '85')
    >>> text = render_prompt(tokenizer, records[0], "think")   # through the chat template

Sources: ``builtin:arithmetic`` (``n, seed, digits, ops, split``), ``builtin:countdown``
(``n, seed, numbers, max_number, max_target, ops, split``), or ``.jsonl`` / ``.json`` /
``.parquet`` files with ``{prompt, reference, verifier?, id?}`` rows (GSM8K and MATH
layouts recognised), or a Hugging Face dataset ``hf://datasets/<org>/<name>?config=&split=``
(downloaded when the Hub is reachable). Templates (``think``, ``plain``, ``model``, a Jinja
file) and prefilled reasoning: :mod:`rlvr.data.chat`. ``split=test`` draws from a fixed tenth of the problem space that
``split=train`` never contains, so a held-out eval set stays held out whatever the seeds.
"""

from rlvr.data.chat import (
    PromptFormat,
    TemplateError,
    build_chat,
    record_prefill,
    render_prompt,
    template_prefill,
)
from rlvr.data.records import DataError, PromptRecord
from rlvr.data.sources import load_prompts, parse_builtin, validate_source
from rlvr.data.templates import TEMPLATES, THINK_SYSTEM_PROMPT, build_messages

__all__ = [
    "DataError",
    "PromptFormat",
    "PromptRecord",
    "THINK_SYSTEM_PROMPT",
    "TEMPLATES",
    "TemplateError",
    "build_chat",
    "build_messages",
    "load_prompts",
    "parse_builtin",
    "record_prefill",
    "render_prompt",
    "template_prefill",
    "validate_source",
]
