"""The multi-turn driver over several calls, with a scripted engine: the real engine test
(tests/rollout/test_hf_tools.py) cannot make an untrained model call twice."""

from __future__ import annotations

from rlvr.rollout.base import Completion
from rlvr.rollout.tool_loop import ToolLoop
from rlvr.tools.runner import ToolRunner, ToolsConfig

EOS = 0


def encode(text):
    return [ord(c) for c in text]


def decode(ids):
    return "".join(chr(i) for i in ids if i != EOS)


def turn(text, eos=False):
    ids = encode(text) + ([EOS] if eos else [])
    return Completion(0, ids, text, [-0.5] * len(ids), "stop")


def run(script, max_turns=4, max_new_tokens=500):
    runner = ToolRunner(ToolsConfig(enabled=["calculator"], max_turns=max_turns))
    loop = ToolLoop(runner, encode, decode, [EOS])
    seen = []

    def sample(contexts, budget):
        seen.append((decode(contexts[0]), budget))
        return [script.pop(0) for _ in contexts]

    try:
        first = script.pop(0)
        (c,) = loop.run([encode("Q: ")], [first], sample, max_new_tokens)
    finally:
        runner.close()
    return c, seen


def test_two_calls_three_turns():
    c, seen = run(
        [
            turn('a<tool name="calculator">2+3</tool>'),
            turn('b<tool name="calculator">5*5</tool>'),
            turn("so 25", eos=True),
        ]
    )
    assert c.text == (
        'a<tool name="calculator">2+3</tool><output>5\n</output>'
        'b<tool name="calculator">5*5</tool><output>25\n</output>so 25'
    )
    assert (c.tool_calls, c.tool_errors, c.turns, c.finish_reason) == (2, 0, 3, "stop")
    out1, out2 = encode("<output>5\n</output>"), encode("<output>25\n</output>")
    n1 = len(encode('a<tool name="calculator">2+3</tool>'))
    n2 = len(encode('b<tool name="calculator">5*5</tool>'))
    assert c.model_mask == (
        [True] * n1 + [False] * len(out1) + [True] * n2 + [False] * len(out2) + [True] * 6
    )
    assert [lp for lp, m in zip(c.logprobs, c.model_mask, strict=True) if not m] == [0.0] * (
        len(out1) + len(out2)
    )
    # each continuation sees the whole sequence so far, and the budget left
    assert seen[0] == ('Q: a<tool name="calculator">2+3</tool><output>5\n</output>', 500 - n1 - 19)
    assert seen[1][0].endswith("<output>25\n</output>")


def test_max_turns_stops_the_last_call():
    c, seen = run(
        [turn('<tool name="calculator">1+1</tool>'), turn('<tool name="calculator">2+2</tool>')],
        max_turns=2,
    )
    assert (c.tool_calls, c.turns, len(seen)) == (1, 2, 1)
    assert c.text.endswith('<output>2\n</output><tool name="calculator">2+2</tool>')


def test_forged_output_in_a_later_turn_is_stripped():
    c, _ = run(
        [turn('<tool name="calculator">1+1</tool>'), turn("<output>7</output> it is 2", eos=True)]
    )
    assert c.forged_outputs == 1 and c.text.endswith("</output> it is 2")
    assert "7" not in c.text
