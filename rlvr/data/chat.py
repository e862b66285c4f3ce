"""Chat templates as users' models have them: ``data.template`` and ``data.system_prompt``.

``data.template`` (``data.prompt_template`` is its old name, still accepted):

=================  ============================================================================
``think``          the system prompt asks for ``<think>…</think>`` then ``<answer>…</answer>``
                   (what the ``math``, ``countdown`` and ``think_format`` verifiers read); the
                   tokenizer's chat template renders it, with fallbacks (a template that rejects
                   the system role gets the system prompt in the user turn; a tokenizer without a
                   chat template gets ``System:/User:/Assistant:`` text)
``plain``          the user's prompt alone (no system prompt), same fallbacks
``model``          the tokenizer's own chat template, untouched: no system prompt unless
                   ``data.system_prompt`` gives one, no fallbacks (a tokenizer without a chat
                   template is an error naming the field)
``x.jinja``        a Jinja chat template file (``.jinja``, ``.jinja2`` or ``.j2``), rendered the
                   way Hugging Face renders a tokenizer's own (``messages``,
                   ``add_generation_prompt``, ``bos_token``, ``raise_exception``...)
=================  ============================================================================

``data.system_prompt`` replaces the template's system prompt (``think``'s asks for the tags the
verifiers read, so a replacement should too) or adds one (``plain``, ``model``, a file).

``data.instruction`` is appended to every user message (after a space), the way datasets are
prepared for veRL or OpenRLHF ("Let's think step by step..."): a small chat model follows an
instruction in the user turn far better than one in a system prompt. SmolLM2-135M-Instruct
answers 20 of 64 held-out two-digit additions greedily with "Reply with just the number." after
the question, 0 of 64 with it as the system prompt (``bench/prompt_instruction.py``).

Prefilled reasoning: Qwen3- and DeepSeek-R1-style templates end the prompt inside the
assistant turn with ``<think>`` (or ``<think>\\n``), so the model's completion starts inside the
think block. :func:`render_prompt` finds that prefill (:func:`template_prefill`) and notes it on
the record (:func:`record_prefill`); the reward pool scores ``prefill + completion``, so the
``think_format`` verifier sees the complete ``<think>…</think>answer`` and a model is not
penalised for the ``<think>`` its template wrote. (The prefill rides on the record as an
attribute because :class:`~rlvr.data.records.PromptRecord`'s module is part of the tiny models'
build hash: a new field would rebuild every cached tiny model.)
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlvr.data.records import PromptRecord
from rlvr.data.templates import TEMPLATES

BUILTIN_TEMPLATES = ("think", "plain", "model")
JINJA_SUFFIXES = (".jinja", ".jinja2", ".j2")
MAX_TEMPLATE_BYTES = 256_000
_PREFILL_ATTR = "prefill"
# An open think block, or an empty closed one (Qwen3 with thinking switched off), at the end.
_PREFILL_RE = re.compile(r"<think>\s*(?:</think>\s*)?\Z")


class TemplateError(ValueError):
    """``data.template`` / ``data.system_prompt`` cannot be used; the message names the field."""


class PromptFormat(str):
    """A ``data.template`` value that also carries ``data.system_prompt``.

    It is the template's name (a ``str``, so code that passes ``spec.data.prompt_template``
    on to :func:`render_prompt` keeps working) with the system prompt attached.
    """

    system_prompt: str | None
    instruction: str | None

    def __new__(
        cls, template: str, system_prompt: str | None = None, instruction: str | None = None
    ) -> PromptFormat:
        obj = super().__new__(cls, template)
        obj.system_prompt = system_prompt
        obj.instruction = instruction
        return obj

    def __reduce__(self) -> Any:  # pickled into Ray actors with its system prompt
        return (PromptFormat, (str(self), self.system_prompt, self.instruction))


def check_template(value: str) -> str:
    """``value`` if it is a built-in template name or a Jinja file's path, else ValueError."""
    if value in BUILTIN_TEMPLATES or value.lower().endswith(JINJA_SUFFIXES):
        return value
    raise ValueError(
        f"unknown template {value!r}; use think, plain, model (the tokenizer's own chat "
        f"template) or a path to a Jinja chat template ({', '.join(JINJA_SUFFIXES)})"
    )


def resolve_template_file(value: str, data_roots: Sequence[Path] | None = None) -> Path:
    """The Jinja file ``value`` names; with ``data_roots`` (the service) it must lie under one.

    Relative paths are looked up under the data roots (the service) or the working
    directory (the CLI), as data files are.
    """
    path = Path(value).expanduser()
    if data_roots is None:
        if not path.is_file():
            raise TemplateError(f"data.template: {value}: file not found")
        return path.resolve()
    roots = [Path(r).expanduser().resolve() for r in data_roots]
    for cand in [path] if path.is_absolute() else [r / path for r in roots]:
        real = cand.resolve()
        if not any(real.is_relative_to(r) for r in roots):
            raise TemplateError(
                f"data.template: {value} is outside the data roots; put the file under one of: "
                + ", ".join(map(str, roots))
                + " (RLVR_DATA_ROOTS)"
            )
        if real.is_file():
            return real
    raise TemplateError(
        f"data.template: {value}: file not found under the data roots: "
        + ", ".join(map(str, roots))
    )


@functools.lru_cache(maxsize=16)
def _read_template(path: str) -> str:
    raw = Path(path).read_bytes()
    if len(raw) > MAX_TEMPLATE_BYTES:
        raise TemplateError(f"data.template: {path} is larger than {MAX_TEMPLATE_BYTES} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TemplateError(f"data.template: {path} is not UTF-8 text: {exc}") from None


def load_template_file(value: str, data_roots: Sequence[Path] | None = None) -> str:
    """The text of the Jinja chat template file ``value`` (confined to ``data_roots`` if given)."""
    return _read_template(str(resolve_template_file(value, data_roots)))


def build_chat(
    record: PromptRecord | str,
    template: str = "think",
    system_prompt: str | None = None,
    instruction: str | None = None,
) -> list[dict[str, str]]:
    """The chat messages: the system prompt (``system_prompt``, else the template's own, if
    any) and then the user's prompt, with ``instruction`` after it."""
    check_template(template)
    prompt = record.prompt if isinstance(record, PromptRecord) else record
    if instruction:
        prompt = f"{prompt} {instruction}"
    system = system_prompt if system_prompt is not None else TEMPLATES.get(template)
    head = [{"role": "system", "content": system}] if system else []
    return [*head, {"role": "user", "content": prompt}]


def _apply(tokenizer: Any, messages: list[dict[str, str]], chat_template: str | None) -> str:
    text = tokenizer.apply_chat_template(
        messages, chat_template=chat_template, tokenize=False, add_generation_prompt=True
    )
    return str(text)


def _render_lenient(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """``think`` / ``plain``: the tokenizer's template with the two fallbacks."""
    if getattr(tokenizer, "chat_template", None) is None:
        lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
        return "\n\n".join([*lines, "Assistant:"])
    try:
        return _apply(tokenizer, messages, None)
    except Exception as exc:  # jinja2 TemplateError: e.g. "System role not supported"
        if messages[0]["role"] != "system" or "system" not in str(exc).lower():
            raise
    system, user = messages[0]["content"], messages[1]["content"]
    return _apply(tokenizer, [{"role": "user", "content": f"{system}\n\n{user}"}], None)


def template_prefill(prompt_text: str) -> str:
    """The reasoning the template prefilled at the end of a rendered prompt (``"<think>\\n"``,
    ``"<think>\\n\\n</think>\\n\\n"``), or ``""`` when the completion starts the reply."""
    found = _PREFILL_RE.search(prompt_text)
    return found.group(0) if found else ""


def record_prefill(record: Any) -> str:
    """The prefill :func:`render_prompt` noted on ``record`` (``""`` if none)."""
    value = getattr(record, _PREFILL_ATTR, "")
    return value if isinstance(value, str) else ""


def render_prompt(
    tokenizer: Any,
    record: PromptRecord | str,
    template: str = "think",
    *,
    system_prompt: str | None = None,
    instruction: str | None = None,
    data_roots: Sequence[Path] | None = None,
) -> str:
    """The full prompt text, ending where the model's completion begins.

    Args:
        tokenizer: a transformers tokenizer (its chat template renders the messages).
        record: the prompt (a record, or the user's message as a string).
        template: ``think``, ``plain``, ``model`` or a Jinja file's path (module docstring);
            a :class:`PromptFormat` brings its system prompt along.
        system_prompt: replaces the template's system prompt (default: the
            :class:`PromptFormat`'s, else the template's own).
        instruction: appended to the user's message (default: the :class:`PromptFormat`'s).
        data_roots: where a Jinja file must lie (the service); ``None``: any path.

    When the rendered text ends inside a prefilled think block, the prefill is noted on the
    record (:func:`record_prefill`) so that rewards score the completion with it.
    """
    if isinstance(template, PromptFormat):
        system_prompt = template.system_prompt if system_prompt is None else system_prompt
        instruction = template.instruction if instruction is None else instruction
    name = str(template)
    messages = build_chat(record, name, system_prompt, instruction)
    if name in ("think", "plain"):
        text = _render_lenient(tokenizer, messages)
    elif name == "model":
        if getattr(tokenizer, "chat_template", None) is None:
            raise TemplateError(
                "data.template: model: the tokenizer has no chat template of its own; use "
                "think, plain or a Jinja file"
            )
        text = _apply(tokenizer, messages, None)
    else:
        source = load_template_file(name, data_roots)
        try:
            text = _apply(tokenizer, messages, source)
        except Exception as exc:  # jinja2 syntax or a raise_exception() in the template
            raise TemplateError(f"data.template: {name}: cannot render: {exc}") from None
    if isinstance(record, PromptRecord):
        setattr(record, _PREFILL_ATTR, template_prefill(text))  # see the module docstring
    return text
