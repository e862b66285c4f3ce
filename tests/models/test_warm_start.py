"""The warm start: a tiny model that is right about half the time, reproducibly.

The slow tests use ``resolve_model("tiny:arithmetic")`` with the normal cache (so the
end-to-end training tests and these share one build) and measure on held-out problems
(``split=test``), which the warm start never sees.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re

import pytest

from rlvr.data import load_prompts, render_prompt
from rlvr.models import resolve_model
from rlvr.models.tiny import (
    _is_correct,
    _Landing,
    _problems,
    build_from_recipe,
    default_recipe,
    greedy_completions,
)

HELDOUT = 400  # ±5 points of noise at 200; the band below allows for it
FORMAT = re.compile(r"^<think>.+</think>\n<answer>.+</answer>$", re.DOTALL)


# -- when to stop ---------------------------------------------------------------------------------
def test_landing_stops_in_band_and_goes_back_after_overshooting():
    landing = _Landing(0.52, 0.60, every=25)
    assert landing.decide(0.10) == "snapshot"
    assert landing.decide(0.45) == "snapshot"
    assert landing.decide(0.80) == "back" and landing.every == 12  # jumped past: back, look closer
    assert landing.decide(0.70) == "back" and landing.every == 6
    assert landing.decide(0.50) == "snapshot"
    assert landing.decide(0.55) == "stop"


def test_landing_stops_above_band_when_it_cannot_look_closer():
    assert _Landing(0.52, 0.60, every=25).decide(0.9) == "stop"  # nothing to go back to
    landing = _Landing(0.52, 0.60, every=1)
    landing.decide(0.3)
    assert landing.decide(0.9) == "stop"


# -- reproducibility ------------------------------------------------------------------------------
def _short_build(tmp_path, name, seed, warm_start=True):
    """The real recipe cut to 30 steps with two small evaluations (seconds, not a minute)."""
    recipe = dataclasses.replace(
        default_recipe("arithmetic", seed=seed, warm_start=warm_start),
        max_steps=30,
        eval_every=15,
        eval_below_loss=1e9,
        valid_size=32,
    )
    out = build_from_recipe(recipe, tmp_path / name)
    return {
        f: hashlib.sha256((out / f).read_bytes()).hexdigest()
        for f in ("model.safetensors", "tokenizer.json")
    }


def test_build_is_deterministic_in_seed(tmp_path):
    a = _short_build(tmp_path, "a", seed=0)
    b = _short_build(tmp_path, "b", seed=0)
    assert a == b
    init0 = _short_build(tmp_path, "init0", seed=0, warm_start=False)
    init1 = _short_build(tmp_path, "init1", seed=1, warm_start=False)
    assert init0["model.safetensors"] != init1["model.safetensors"]  # the seed sets the weights
    assert init0["model.safetensors"] != a["model.safetensors"]  # and the warm start moved them


# -- the built model (slow: builds tiny:arithmetic unless cached) ---------------------------------
@pytest.fixture(scope="module")
def arithmetic_model():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model("tiny:arithmetic")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    records = load_prompts(f"builtin:arithmetic?n={HELDOUT}&seed=7&split=test")
    prompts = [render_prompt(tokenizer, r, "think") for r in records]
    return model, tokenizer, records, prompts, greedy_completions(model, tokenizer, prompts)


@pytest.mark.slow
def test_warm_start_is_right_about_half_the_time_on_held_out_problems(arithmetic_model):
    _, _, records, _, completions = arithmetic_model
    train, valid = _problems(default_recipe("arithmetic"))
    seen = {p.prompt() for p in train + valid}
    assert not seen & {r.prompt for r in records}  # held out for real
    right = [
        _is_correct("arithmetic", c, r.reference) for c, r in zip(completions, records, strict=True)
    ]
    accuracy = sum(right) / len(right)
    assert 0.45 <= accuracy <= 0.70, accuracy  # aimed at 50-65%; ±5 points of sampling noise


@pytest.mark.slow
def test_greedy_completions_reason_in_think_then_answer(arithmetic_model):
    _, _, _, _, completions = arithmetic_model
    well_formed = [bool(FORMAT.match(c)) for c in completions]
    assert sum(well_formed) / len(well_formed) >= 0.9, completions[:5]
    assert all("carry" in c or "result" in c for c in completions if FORMAT.match(c))


@pytest.mark.slow
def test_sampled_groups_give_grpo_a_signal(arithmetic_model):
    """At temperature 1, most groups of 8 have both right and wrong answers."""
    import torch

    model, tokenizer, records, prompts, _ = arithmetic_model
    torch.manual_seed(0)
    enc = tokenizer(prompts[:24], return_tensors="pt", padding=True, padding_side="left")
    with torch.no_grad():
        out = model.generate(
            **enc, do_sample=True, temperature=1.0, max_new_tokens=64, num_return_sequences=8
        )
    texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    right = [_is_correct("arithmetic", t, records[i // 8].reference) for i, t in enumerate(texts)]
    groups = [right[i : i + 8] for i in range(0, len(right), 8)]
    mixed = sum(0 < sum(g) < 8 for g in groups)
    assert mixed >= 0.5 * len(groups), groups


def test_countdown_recipe_builds_a_model_that_reads_its_prompts(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    recipe = dataclasses.replace(
        default_recipe("countdown"), max_steps=10, eval_every=10, eval_below_loss=1e9, valid_size=8
    )
    path = build_from_recipe(recipe, tmp_path / "cd")
    tokenizer = AutoTokenizer.from_pretrained(path)
    AutoModelForCausalLM.from_pretrained(path)
    record = load_prompts("builtin:countdown?n=1&ops=+-")[0]
    text = render_prompt(tokenizer, record, "think")
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    train, _ = _problems(recipe)
    assert all(set(re.findall(r"[-+*/]", p.expression)) <= {"+", "-"} for p in train)
