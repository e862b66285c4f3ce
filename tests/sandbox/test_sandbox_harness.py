"""The record/replay harness's data side: plain-data encoding and report parsing."""

from __future__ import annotations

import json
import math

import pytest

from sandbox.harness import decode, encode, parse_report


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -(10**40),
        1.5,
        -0.0,
        float("inf"),
        "héllo\n",
        b"\x00\xff",
        2 - 3j,
        [1, [2, (3, "x")], {"k": (1, 2)}],
        {(1, 2): frozenset({3}), "s": {4, 5}},
        (),
        [],
    ],
)
def test_plain_values_round_trip_through_json(value):
    tagged = json.loads(json.dumps(encode(value)))
    back = decode(tagged)
    assert back == value and type(back) is type(value)


def test_nan_round_trips():
    assert math.isnan(decode(encode(float("nan"))))


def test_bool_and_int_stay_distinct():
    assert type(decode(encode(True))) is bool and type(decode(encode(1))) is int


def test_objects_that_are_not_plain_data_are_refused():
    class AlwaysEqual:
        def __eq__(self, other):
            return True

    with pytest.raises(TypeError, match="not plain data: AlwaysEqual"):
        encode(AlwaysEqual())
    with pytest.raises(TypeError):
        encode([1, lambda: 2])


def test_subclass_overrides_are_not_consulted():
    class LyingList(list):
        def __iter__(self):
            return iter([1, 2, 3])

        def __eq__(self, other):
            return True

    class LyingStr(str):
        def __str__(self):
            return "expected answer"

    assert decode(encode(LyingList([9]))) == [9]
    assert decode(encode(LyingStr("real"))) == "real"
    assert type(decode(encode(LyingList([9])))) is list


def test_too_deep_values_are_refused():
    deep: list = []
    for _ in range(200):
        deep = [deep]
    with pytest.raises(ValueError, match="nested too deeply"):
        encode(deep)


@pytest.mark.parametrize(
    "tagged",
    [
        "i",
        [],
        ["i"],
        ["b", 1],
        ["s", 5],
        ["z", 1],
        ["l", "notalist"],
        ["d", [[["l", []], ["i", "1"]]]],  # unhashable key
        ["i", "1" * 5000],  # past int's digit limit
        ["y", "zz"],
    ],
)
def test_malformed_values_raise_value_error(tagged):
    with pytest.raises((ValueError, TypeError)):
        decode(tagged)


def test_report_lines_need_the_nonce_and_duplicates_are_flagged():
    out = (
        'noise\nabc123 load {"end": "ok"}\nabc123 0 {"calls": [], "end": "ok"}\n'
        'wrongnonce 1 {}\nabc123 1 {"end": "ok"}\nabc123 1 {"end": "assert"}\n'
        "abc123 2 {not json\n"
    )
    found, duplicated = parse_report(out, "abc123")
    assert found["load"] == {"end": "ok"} and found["0"]["end"] == "ok"
    assert duplicated == {"1", "2"}
