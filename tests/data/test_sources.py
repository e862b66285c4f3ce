"""Prompt sources: built-in generators, dataset files, and the errors bad input gets."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rlvr.data import (
    DataError,
    PromptRecord,
    arithmetic,
    countdown,
    load_prompts,
    parse_builtin,
    validate_source,
)


# -- builtin:arithmetic ------------------------------------------------------------------------
def test_arithmetic_reference_is_the_true_answer_for_every_op():
    records = load_prompts("builtin:arithmetic?n=300&seed=3&digits=3&ops=+-*")
    assert len(records) == 300
    ops_seen = set()
    for rec in records:
        _, a, op, b = rec.prompt.rstrip("?").split(" ")[1:2] + rec.prompt.rstrip("?").split(" ")[2:]
        ops_seen.add(op)
        expected = {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
        assert rec.reference == str(expected)
        assert 100 <= int(a) <= 999 and 100 <= int(b) <= 999
        assert rec.verifier is None
    assert ops_seen == {"+", "-", "*"}


def test_arithmetic_is_deterministic_in_seed_and_distinct():
    a = load_prompts("builtin:arithmetic?n=200&seed=5")
    b = load_prompts("builtin:arithmetic?n=200&seed=5")
    c = load_prompts("builtin:arithmetic?n=200&seed=6")
    assert a == b
    assert [r.prompt for r in a] != [r.prompt for r in c]
    assert len({r.prompt for r in a}) == 200
    assert len({r.id for r in a}) == 200


def test_subtraction_never_goes_negative():
    for rec in load_prompts("builtin:arithmetic?n=500&digits=2&ops=-"):
        assert int(rec.reference) >= 0


def test_test_split_never_overlaps_train_split_whatever_the_seeds():
    train = {
        r.prompt
        for s in range(3)
        for r in load_prompts(f"builtin:arithmetic?n=2000&seed={s}&split=train")
    }
    test = {
        r.prompt
        for s in range(3)
        for r in load_prompts(f"builtin:arithmetic?n=200&seed={s}&split=test")
    }
    assert test and train and not (train & test)


@pytest.mark.parametrize(
    "a,op,b",
    [
        (47, "+", 38),
        (99, "+", 1),
        (5, "+", 7),
        (901, "-", 199),
        (40, "-", 40),
        (73, "*", 46),
        (8, "*", 9),
    ],
)
def test_worked_solution_ends_in_the_right_answer(a, op, b):
    p = arithmetic.ArithmeticProblem(a, op, b)
    completion = p.completion()
    assert completion.startswith("<think>") and "</think>\n<answer>" in completion
    assert completion.endswith(f"<answer>{p.answer}</answer>")
    assert f"result {p.answer}</think>" in completion


def test_addition_trace_is_column_addition():
    assert arithmetic.ArithmeticProblem(47, "+", 38).trace() == "7+8=15 carry 1\n4+3+1=8\nresult 85"
    assert (
        arithmetic.ArithmeticProblem(52, "-", 17).trace() == "12-7=5 borrow 1\n5-1-1=3\nresult 35"
    )


def test_builtin_query_keeps_plus_signs():
    name, params = parse_builtin("builtin:arithmetic?n=10&ops=+-*&digits=3")
    assert (
        name == "arithmetic"
        and params["ops"] == "+-*"
        and params["digits"] == 3
        and params["n"] == 10
    )
    assert parse_builtin("builtin:arithmetic?ops=x")[1]["ops"] == "*"


# -- builtin:countdown -------------------------------------------------------------------------
def _numbers_in(expression: str) -> list[int]:
    return [int(t) for t in re.findall(r"\d+", expression)]


def test_countdown_problems_are_solvable_with_the_given_solution():
    records = load_prompts("builtin:countdown?n=200&seed=2&numbers=4&max_number=30")
    problems = countdown.generate(200, seed=2, numbers=4, max_number=30)
    for rec, p in zip(records, problems, strict=True):
        assert rec.reference == {"numbers": list(p.numbers), "target": p.target}
        assert len(p.numbers) == 4 and all(1 <= x <= 30 for x in p.numbers)
        assert 1 <= p.target <= 100 and p.target not in p.numbers
        # the expression uses each number at most once and hits the target
        assert eval(p.expression, {"__builtins__": {}}) == p.target  # our own digits and ops
        assert not Counter(_numbers_in(p.expression)) - Counter(p.numbers)
        assert p.completion().endswith(f"<answer>{p.expression}</answer>")
        assert p.steps[-1].endswith(f"={p.target}")


def test_countdown_solution_is_canonical_fewest_steps_first():
    # 8+2 = 10 reaches the target in one step, though the problem was made with three numbers
    assert countdown.canonical_solution((2, 5, 8), 10) == (["8+2=10"], "8+2")
    # the search tries + before * before - before /, larger number first
    assert countdown.canonical_solution((3, 4, 2), 14) == (["4+3=7", "7*2=14"], "(4+3)*2")
    assert countdown.canonical_solution((9, 4, 1), 5) == (["9-4=5"], "9-4")
    assert countdown.canonical_solution((7, 5), 100) is None
    # the same numbers in any order give the same solution
    assert countdown.canonical_solution((2, 4, 3), 14) == countdown.canonical_solution(
        (3, 4, 2), 14
    )


def test_countdown_asks_for_fewer_when_the_space_runs_out():
    with pytest.raises(DataError, match="found only .* distinct problems") as info:
        load_prompts("builtin:countdown?n=5000&max_number=5")
    assert "raise max_number" in str(info.value)
    assert len(countdown.generate(5000, max_number=5, allow_fewer=True)) < 5000


# -- files ---------------------------------------------------------------------------------------
def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_jsonl_rows_with_prompt_reference_and_verifier(tmp_path):
    f = _write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"prompt": "2+2?", "reference": "4"},
            {"prompt": "sum", "reference": 7, "id": "seven"},
            {
                "prompt": "code",
                "reference": {"tests": [{"stdin": "", "stdout": "1"}]},
                "verifier": "code",
            },
        ],
    )
    recs = load_prompts(str(f))
    assert recs[0] == PromptRecord("2+2?", "4", None, "d-1")
    assert recs[1].reference == "7" and recs[1].id == "seven"
    assert recs[2].verifier == "code" and recs[2].reference["tests"][0]["stdout"] == "1"


def test_gsm8k_and_math_layouts_are_recognised(tmp_path):
    f = _write_jsonl(
        tmp_path / "math.jsonl",
        [
            {"question": "Tom has 3 apples...", "answer": "He has 3+2=5\n#### 1,005"},
            {"problem": "Compute 3/4.", "solution": "We get $\\boxed{\\frac{3}{4}}$."},
            {"problem": "p", "solution": "no box", "answer": "x=2"},
        ],
    )
    recs = load_prompts(str(f))
    assert (recs[0].prompt, recs[0].reference) == ("Tom has 3 apples...", "1005")
    assert recs[1].reference == "\\frac{3}{4}"
    assert recs[2].reference == "x=2"


def test_code_layouts_become_code_rows(tmp_path):
    f = _write_jsonl(
        tmp_path / "code.jsonl",
        [
            {"prompt": "echo", "tests": [{"stdin": "a", "stdout": "a"}]},
            {"prompt": "def f", "test": "assert f(1) == 2", "entry_point": "f"},
        ],
    )
    a, b = load_prompts(str(f))
    assert a.verifier == "code" and a.reference == {"tests": [{"stdin": "a", "stdout": "a"}]}
    assert b.verifier == "code" and b.reference == {
        "test_code": "assert f(1) == 2",
        "entry_point": "f",
    }


def test_parquet_and_json_files_load_like_jsonl(tmp_path):
    rows = [{"prompt": "1+1?", "reference": "2"}, {"prompt": "2+3?", "reference": "5"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    (tmp_path / "d.json").write_text(json.dumps(rows))
    for name in ("d.parquet", "d.json"):
        recs = load_prompts(str(tmp_path / name))
        assert [(r.prompt, r.reference) for r in recs] == [("1+1?", "2"), ("2+3?", "5")]


# -- bad input: clear errors naming row and field ------------------------------------------------
@pytest.mark.parametrize(
    "rows,row,field",
    [
        ([{"prompt": "ok", "reference": "1"}, {"prompt": "missing ref"}], 2, "reference"),
        ([{"prompt": 5, "reference": "1"}], 1, "prompt"),
        ([{"prompt": "", "reference": "1"}], 1, "prompt"),
        ([{"text": "no prompt", "reference": "1"}], 1, "prompt"),
        ([{"prompt": "p", "reference": True}], 1, "reference"),
        ([{"prompt": "p", "reference": "1", "verifier": 3}], 1, "verifier"),
        ([{"question": "q", "answer": "no hashes"}], 1, "answer"),
        ([{"problem": "q", "solution": "no box"}], 1, "solution"),
        ([["a", "list"]], 1, None),
    ],
)
def test_bad_rows_name_row_and_field(tmp_path, rows, row, field):
    f = _write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError) as info:
        load_prompts(str(f))
    assert (info.value.row, info.value.field) == (row, field)
    assert str(f) in str(info.value) and f"row {row}" in str(info.value)


def test_invalid_json_line_reports_its_line_number(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"prompt": "a", "reference": "1"}\n\n{"prompt": \n')
    with pytest.raises(DataError, match="row 3.*not valid JSON"):
        load_prompts(str(f))


@pytest.mark.parametrize(
    "source,field,match",
    [
        ("builtin:arithmetic?n=abc", "n", "integer"),
        ("builtin:arithmetic?n=0", "n", "1.."),
        ("builtin:arithmetic?digits=12", "digits", "digits"),
        ("builtin:arithmetic?ops=/", "ops", "subset"),
        ("builtin:arithmetic?bogus=1", "bogus", "takes n, seed"),
        ("builtin:arithmetic?split=dev", "split", "all, train, test"),
        ("builtin:countdown?numbers=9", "numbers", "2..6"),
        ("builtin:nope", None, "known: builtin:arithmetic"),
        ("data.csv", None, "use a .jsonl"),
        ("missing.jsonl", None, "not found"),
        ("", None, "empty"),
    ],
)
def test_bad_sources_get_a_clear_error(source, field, match):
    with pytest.raises(DataError, match=match) as info:
        load_prompts(source)
    assert info.value.field == field


def test_data_roots_confine_files(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    _write_jsonl(root / "in.jsonl", [{"prompt": "p", "reference": "1"}])
    outside = _write_jsonl(tmp_path / "out.jsonl", [{"prompt": "p", "reference": "1"}])
    assert len(load_prompts("in.jsonl", data_roots=[root])) == 1
    assert len(load_prompts(str(root / "in.jsonl"), data_roots=[root])) == 1
    for escape in (str(outside), "../out.jsonl"):
        with pytest.raises(DataError, match="outside the data roots"):
            load_prompts(escape, data_roots=[root])


def test_validate_source_counts_rows_and_checks_row_verifier_names(tmp_path):
    good = _write_jsonl(tmp_path / "g.jsonl", [{"prompt": "p", "reference": "1"}] * 3)
    assert validate_source(str(good)) == 3
    assert validate_source("builtin:countdown?n=50") == 50
    bad = _write_jsonl(
        tmp_path / "b.jsonl",
        [
            {"prompt": "p", "reference": "1"},
            {"prompt": "p", "reference": "1", "verifier": "no_such"},
        ],
    )
    with pytest.raises(DataError, match="unknown verifier") as info:
        validate_source(str(bad))
    assert (info.value.row, info.value.field) == (2, "verifier")


def test_data_error_survives_pickling():
    import pickle

    err = pickle.loads(pickle.dumps(DataError("s.jsonl", 4, "reference", "missing")))
    assert (err.source, err.row, err.field, str(err)) == (
        "s.jsonl",
        4,
        "reference",
        "s.jsonl, row 4, field 'reference': missing",
    )
