"""builtin:word_problems: deterministic by seed, split-disjoint, references that the worked
steps and the math verifier agree with."""

from __future__ import annotations

import ast
import operator
import re

import pytest

from rlvr.data import DataError, load_prompts, validate_source
from rlvr.data.word_problems import TEMPLATES, generate
from verifiers import get_verifier

_CALC = re.compile(r"<<([^=]+)=(-?\d+)>>(-?\d+)")
_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def _evaluate(expr: str) -> float:
    """A worked step's arithmetic, evaluated independently of the generator."""

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        raise ValueError(f"unexpected expression {expr!r}")

    return ev(ast.parse(expr, mode="eval"))


def test_the_same_seed_gives_the_same_problems_and_another_seed_others():
    a = generate(200, seed=7, split="train")
    assert a == generate(200, seed=7, split="train")
    b = generate(200, seed=8, split="train")
    assert len({p.text for p in a} & {p.text for p in b}) < 20
    assert len({p.text for p in a}) == 200  # distinct within a source


def test_every_template_appears_and_problems_take_several_steps():
    problems = generate(240, seed=0)
    assert {p.template for p in problems} == set(TEMPLATES)
    assert all(len(p.steps) >= 2 for p in problems)
    assert any("centimetres" in p.text for p in problems)  # units
    assert any("%" in p.text for p in problems)


def test_worked_steps_compute_the_reference_and_each_step_is_right():
    for p in generate(600, seed=3):
        calcs = [_CALC.search(step) for step in p.steps]
        assert all(calcs), p.steps
        for m in calcs:
            expr, claimed, shown = m.group(1), int(m.group(2)), int(m.group(3))
            assert _evaluate(expr) == claimed == shown, (p.text, expr)
        assert int(calcs[-1].group(2)) == p.answer, p.text
        assert p.answer >= 0
        # every number the last step uses comes from the text or an earlier step
        known = {int(x) for x in re.findall(r"\d+", p.text)} | {int(m.group(2)) for m in calcs[:-1]}
        used = {int(x) for x in re.findall(r"\d+", calcs[-1].group(1))}
        assert used <= known | {1, 2, 4, 60, 100}, (p.text, p.steps)


def test_test_split_never_meets_the_train_split():
    train = {p.text for p in generate(3000, seed=0, split="train")}
    test = {p.text for p in generate(300, seed=0, split="test")}
    assert not train & test


def test_the_math_verifier_accepts_the_reference_and_rejects_a_wrong_answer():
    math = get_verifier("math")
    records = load_prompts("builtin:word_problems?n=24&seed=2&split=test")
    assert len(records) == 24
    for rec in records:
        assert math.verify(f"So the answer is {rec.reference}.", rec.reference).passed
        wrong = str(int(rec.reference) + 1)
        assert not math.verify(f"<answer>{wrong}</answer>", rec.reference).passed
    assert validate_source("builtin:word_problems?n=50", verifiers=["math"]) == 50


@pytest.mark.parametrize(
    ("source", "field"),
    [
        ("builtin:word_problems?digits=2", "digits"),
        ("builtin:word_problems?n=0", "n"),
        ("builtin:word_problems?split=dev", "split"),
    ],
)
def test_bad_parameters_name_the_field(source, field):
    with pytest.raises(DataError) as exc:
        load_prompts(source)
    assert exc.value.field == field
