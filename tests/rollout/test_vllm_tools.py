"""The vLLM engine's tool rollouts continue each sequence as soon as its own call returns:
one slow tool does not stall the others. vLLM cannot run here (no GPU), so it is replaced at
its boundary (``vllm.LLM``: ``generate`` for the first turns, ``llm_engine.add_request`` /
``step`` for the continuations); the driver, the tool pool and the calculator are real.
"""

from __future__ import annotations

import re
import sys
import textwrap
import threading

import pytest

from rlvr.rollout.base import SamplingConfig
from rlvr.rollout.vllm import VllmEngine, VllmEngineConfig
from rlvr.tools import Tool, ToolResult, runner
from rlvr.tools.runner import ToolsConfig

# Characters are tokens (id = code point); id 3 is EOS. The first turn of each prompt is
# scripted; a continuation answers with the number in the last <output> block.
FAKE_VLLM = textwrap.dedent(
    r"""
    import re
    from types import SimpleNamespace

    EOS = 3
    FIRST = {}          # prompt text -> the first turn's text
    ON_FINISH = None    # called with the context text of each continuation that finishes
    ADDED = []          # (request_id, context text, SamplingParams kwargs) in order

    class SamplingParams:
        def __init__(self, **kw):
            self.kw = kw

    class _Tokenizer:
        all_special_tokens = ["\x03"]
        eos_token_id = EOS
        def encode(self, text, add_special_tokens=False):
            return [ord(c) for c in text]
        def decode(self, ids, skip_special_tokens=False):
            return "".join(chr(i) for i in ids)

    def _completion(text, eos):
        toks = [ord(c) for c in text] + ([EOS] if eos else [])
        return SimpleNamespace(index=0, token_ids=toks, text=text, logprobs=[{t: SimpleNamespace(logprob=-0.5)} for t in toks],
                               finish_reason="stop")

    def _text(ids):
        return "".join(chr(i) for i in ids)

    class _Engine:
        def __init__(self):
            self.waiting = []
        def add_request(self, request_id, prompt, params):
            context = _text(prompt["prompt_token_ids"])
            ADDED.append((request_id, context, params.kw))
            self.waiting.append((request_id, context))
        def step(self):
            outs = []
            for request_id, context in self.waiting:  # every request finishes in one step
                value = re.findall(r"<output>(.*?)\n?</output>", context, re.S)[-1]
                outs.append(SimpleNamespace(request_id=request_id, finished=True,
                                            outputs=[_completion(f"<answer>{value}</answer>", True)]))
                if ON_FINISH is not None:
                    ON_FINISH(context)
            self.waiting = []
            return outs
        def has_unfinished_requests(self):
            return bool(self.waiting)

    class LLM:
        def __init__(self, **kw):
            self.llm_engine = _Engine()
            self.model_config = SimpleNamespace(max_model_len=512, get_vocab_size=lambda: 200)
        def get_tokenizer(self):
            return _Tokenizer()
        def generate(self, prompts, params, use_tqdm=True):
            return [SimpleNamespace(outputs=[_completion(FIRST[_text(p["prompt_token_ids"])], False)])
                    for p in prompts]
    """
)


class SlowTool(Tool):
    """Returns only when released (or after a deadlock guard of 60 s, which the test fails)."""

    description = "waits"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.released_in_time = None

    def run(self, code: str, timeout_s: float) -> ToolResult:
        self.released_in_time = self.release.wait(60)
        return ToolResult("7")


@pytest.fixture
def fake_vllm(tmp_path, monkeypatch):
    (tmp_path / "vllm").mkdir()
    (tmp_path / "vllm" / "__init__.py").write_text(FAKE_VLLM)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    import vllm

    yield vllm
    sys.modules.pop("vllm", None)


def test_a_slow_call_does_not_stall_the_other_sequences(fake_vllm, monkeypatch):
    slow = SlowTool()
    real_get_tool = runner.get_tool
    monkeypatch.setattr(runner, "get_tool", lambda n: slow if n == "slow" else real_get_tool(n))
    fake_vllm.FIRST.update(
        {
            "a": '<tool name="slow">wait</tool>',
            "b": '<tool name="calculator">6*7</tool>',
            "c": '<tool name="calculator">2+3</tool>',
        }
    )
    finished: list[str] = []

    def on_finish(context: str) -> None:
        finished.append(context[0])
        if sorted(finished) == ["b", "c"]:  # both fast sequences are done: let the slow one go
            slow.release.set()

    fake_vllm.ON_FINISH = on_finish
    tools = ToolsConfig(enabled=["calculator", "slow"], max_turns=2, workers=4)
    engine = VllmEngine(VllmEngineConfig(model="/m", tools=tools))
    try:
        out = engine.generate(
            [[ord("a")], [ord("b")], [ord("c")]],
            SamplingConfig(n=1, max_new_tokens=100, seed=7),
            prompt_offset=5,
        )
    finally:
        if engine._tool_loop is not None:
            engine._tool_loop.runner.close()
    assert slow.released_in_time is True  # released by the fast sequences' finishing
    assert finished == ["b", "c", "a"] or finished == ["c", "b", "a"]
    answers = [re.findall(r"<answer>(.*)</answer>", c.text) for c in out]
    assert answers == [["7"], ["42"], ["5"]]
    assert [c.prompt_index for c in out] == [5, 6, 7]
    assert all(c.tool_calls == 1 and c.turns == 2 for c in out)
    # the tool's output is context: masked out, logprob 0
    b = out[1]
    output_at = b.text.index("<output>")
    assert b.model_mask[:output_at] == [True] * output_at
    assert not any(b.model_mask[output_at : output_at + len("<output>42\n</output>")])
    assert b.model_mask[-1] and b.token_ids[-1] == 3
    # each continuation is its own request with its own seed: seed + global index * 1_000_003 + 1
    seeds = {ctx[0]: kw["seed"] for _, ctx, kw in fake_vllm.ADDED}
    assert seeds == {s: 7 + (5 + i) * 1_000_003 + 1 for i, s in enumerate("abc")}
    assert all(kw["n"] == 1 and "</tool>" in kw["stop"] for _, _, kw in fake_vllm.ADDED)
