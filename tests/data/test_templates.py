"""Prompt templates rendered through whatever chat template the tokenizer has."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from rlvr.config import DataSpec
from rlvr.data import (
    THINK_SYSTEM_PROMPT,
    PromptRecord,
    TemplateError,
    build_messages,
    record_prefill,
    render_prompt,
    template_prefill,
)


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


# -- data.template: think | plain | model | a Jinja file; data.system_prompt -------------------
_QWEN3_THINKING = (  # Qwen3-thinking / DeepSeek-R1 style: the reply starts inside <think>
    "{%- for m in messages -%}"
    "{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n<think>\\n' -}}{%- endif -%}"
)
_CHATML = _QWEN3_THINKING.replace("<think>\\n", "")


def test_system_prompt_replaces_thinks_and_is_added_to_plain():
    tok = _tokenizer(_CHATML)
    own = render_prompt(tok, "2+2?", "think", system_prompt="Be brief.")
    assert own == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n" \
        "<|im_start|>assistant\n"  # fmt: skip
    assert THINK_SYSTEM_PROMPT not in own
    assert "Be brief." in render_prompt(tok, "2+2?", "plain", system_prompt="Be brief.")
    # A PromptFormat (what spec.data.prompt_template gives) brings its system prompt along.
    spec = DataSpec(template="plain", system_prompt="Be brief.")
    assert render_prompt(tok, "2+2?", spec.prompt_template) == render_prompt(
        tok, "2+2?", "plain", system_prompt="Be brief."
    )


def test_instruction_follows_the_users_prompt_in_every_template_and_survives_pickling():
    import pickle

    tok = _tokenizer(_CHATML)
    spec = DataSpec(template="model", instruction="Reply with just the number.")
    fmt = pickle.loads(pickle.dumps(spec.prompt_template))  # as Ray actors receive it
    assert render_prompt(tok, PromptRecord("2+2?", "4"), fmt) == (
        "<|im_start|>user\n2+2? Reply with just the number.<|im_end|>\n<|im_start|>assistant\n"
    )
    think = render_prompt(
        tok, "2+2?", DataSpec(template="think", instruction="Be brief.").prompt_template
    )
    assert think.index(THINK_SYSTEM_PROMPT) < think.index("2+2? Be brief.")
    # No instruction: the prompt is untouched.
    assert "2+2?<|im_end|>" in render_prompt(
        tok, "2+2?", DataSpec(template="plain").prompt_template
    )
    with pytest.raises(ValidationError, match="instruction"):
        DataSpec(instruction="")


def test_model_template_is_the_tokenizers_own_untouched():
    with_default = (  # a model template with its own default system prompt (Qwen2.5-style)
        "{%- if messages[0]['role'] != 'system' -%}<sys>default</sys>{%- endif -%}" + _CHATML
    )
    tok = _tokenizer(with_default)
    text = render_prompt(tok, PromptRecord("2+2?", "4"), "model")
    assert text == "<sys>default</sys><|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
    assert THINK_SYSTEM_PROMPT not in text
    # No fallbacks: a template that rejects the system role fails instead of being worked around.
    with pytest.raises(Exception, match="System role not supported"):
        render_prompt(_tokenizer(_NO_SYSTEM), "2+2?", "model", system_prompt="x")
    with pytest.raises(TemplateError, match="data.template: model: the tokenizer has no chat"):
        render_prompt(_tokenizer(None), "2+2?", "model")


def test_jinja_file_template_and_its_prefilled_think(tmp_path):
    path = tmp_path / "qwen3.jinja"
    path.write_text(_QWEN3_THINKING)
    record = PromptRecord("2+2?", "4")
    text = render_prompt(_tokenizer(None), record, str(path))  # the file, not the tokenizer's
    assert text.endswith("<|im_start|>assistant\n<think>\n")
    assert record_prefill(record) == "<think>\n"
    plain = PromptRecord("2+2?", "4")
    render_prompt(_tokenizer(_CHATML), plain, "think")
    assert record_prefill(plain) == ""
    assert template_prefill("…assistant\n<think>\n\n</think>\n\n") == "<think>\n\n</think>\n\n"
    assert template_prefill("User wrote <think> earlier<|im_end|>\nassistant\n") == ""
    broken = tmp_path / "broken.jinja"
    broken.write_text("{% for m in messages %}")
    with pytest.raises(TemplateError, match="broken.jinja: cannot render"):
        render_prompt(_tokenizer(None), "hi", str(broken))


def test_jinja_file_is_confined_to_the_data_roots(tmp_path):
    root, outside = tmp_path / "data", tmp_path / "elsewhere"
    root.mkdir(), outside.mkdir()
    (root / "t.jinja").write_text(_CHATML)
    (outside / "t.jinja").write_text(_CHATML)
    tok = _tokenizer(None)
    assert render_prompt(tok, "hi", "t.jinja", data_roots=[root]).endswith("assistant\n")
    for bad in (str(outside / "t.jinja"), "../elsewhere/t.jinja"):
        with pytest.raises(TemplateError, match="is outside the data roots"):
            render_prompt(tok, "hi", bad, data_roots=[root])
    with pytest.raises(TemplateError, match="not found under the data roots"):
        render_prompt(tok, "hi", "missing.jinja", data_roots=[root])


def test_data_template_field_and_its_old_name():
    assert DataSpec().template == "think"
    assert DataSpec.model_validate({"prompt_template": "plain"}).template == "plain"
    assert DataSpec.model_validate({"template": "x/qwen3.jinja"}).prompt_template == "x/qwen3.jinja"
    with pytest.raises(ValidationError, match="unknown template 'cot'"):
        DataSpec(template="cot")
    with pytest.raises(ValidationError, match="give data.template"):
        DataSpec.model_validate({"template": "think", "prompt_template": "plain"})


def test_reward_scores_the_prefill_with_the_completion():
    """A prefilled model writes 'reasoning</think><answer>4</answer>': not penalised."""
    from rlvr.config import RewardSpec, VerifierRef
    from rlvr.train.reward import RewardPool

    spec = RewardSpec(
        verifiers=[VerifierRef(name="math"), VerifierRef(name="think_format", weight=0.1)],
        workers=1,
    )
    prefilled, bare = PromptRecord("2+2?", "4"), PromptRecord("2+2?", "4")
    render_prompt(_tokenizer(_QWEN3_THINKING), prefilled, "plain")
    render_prompt(_tokenizer(_CHATML), bare, "plain")
    completion = "2 plus 2 is 4</think><answer>4</answer>"
    with RewardPool(spec) as pool:
        with_prefill, without = pool.score([completion, completion], [prefilled, bare])
    assert with_prefill.scores["think_format"] == 1.0 and with_prefill.passed
    assert without.scores["think_format"] < 1.0  # no prefill: the <think> is really missing


@pytest.mark.slow
def test_prefilled_think_template_trains_without_format_penalty(ray_cluster, tmp_path):
    """The warm-started tiny model under a Qwen3-style template that prefills '<think>': its
    completions start inside the think block and think_format scores them as complete."""
    from rlvr.config import JobSpec
    from rlvr.train import run
    from rlvr.train.rundir import read_jsonl

    template = tmp_path / "prefilled.jinja"
    template.write_text(_QWEN3_THINKING.replace("<think>\\n", "<think>"))
    spec = JobSpec.model_validate(
        {
            "model": {"path": "tiny:arithmetic"},
            "data": {"train": "builtin:arithmetic?n=32&split=train", "eval": None,
                     "template": str(template), "system_prompt": THINK_SYSTEM_PROMPT},
            "reward": {"verifiers": [{"name": "math"}, {"name": "think_format", "weight": 0.1}],
                       "workers": 1},
            "algorithm": {"group_size": 2, "prompts_per_step": 4, "max_steps": 2,
                          "micro_batch_size": 8},
            "rollout": {"engine": "hf", "max_new_tokens": 48, "temperature": 0.7},
            "checkpoint": {"every": 100},
        }
    )  # fmt: skip
    summary = run(spec, tmp_path / "run", actor_cpus=0)
    assert summary.status == "succeeded"
    samples = read_jsonl(tmp_path / "run" / "samples.jsonl")
    assert samples and not any(s["completion"].lstrip().startswith("<think>") for s in samples)
    assert all(s["verdicts"]["think_format"]["details"]["checks"]["think"] for s in samples)
    metrics = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    steps = [m for m in metrics if "reward/think_format/mean" in m]
    assert steps and all(m["reward/think_format/mean"] >= 0.9 for m in steps)
    assert all(m["think/format_ok"] >= 0.9 for m in steps)


def test_the_service_confines_a_template_file_to_its_data_roots(tmp_path):
    from rlvr.api.settings import Settings
    from rlvr.api.validation import check_spec
    from rlvr.config import JobSpec

    root = tmp_path / "data"
    root.mkdir()
    (root / "chat.jinja").write_text(_CHATML)
    (tmp_path / "evil.jinja").write_text(_CHATML)
    settings = Settings(data_roots=[root], model_roots=[tmp_path], runs_dir=tmp_path / "runs")
    stored, errors = check_spec(
        JobSpec.model_validate({"data": {"template": "chat.jinja"}}), settings
    )
    assert errors == [] and stored.data.template == str(root / "chat.jinja")  # made absolute
    for bad in ("../evil.jinja", str(tmp_path / "evil.jinja")):
        _, errors = check_spec(JobSpec.model_validate({"data": {"template": bad}}), settings)
        (err,) = errors
        assert err["loc"] == ["body", "data", "template"] and "outside the data roots" in err["msg"]
