"""Weight updates mid-sequence with the vLLM engine (``VllmEngineConfig.mid_sequence_loads``).

vLLM cannot run here (no GPU), so it is replaced at its boundary: the stand-in of
``test_vllm_logic.py`` (``LLM.generate``, ``collective_rpc``, the worker's weights) gains the
step-by-step side that the engine drives with the flag on, ``LLMEngine.add_request`` / ``step``
/ ``has_unfinished_requests`` / ``abort_request``, as vLLM 0.26 has them: a request with
``n`` samples reports per sample, ``RequestOutputKind.DELTA`` outputs come at a sample's first
token and then every ``stream_interval`` tokens and at its end, and with ``async_scheduling``
a step returns the tokens the previous step computed. The token rule is that of its
``generate`` (sample ``j``'s token ``k`` after a prompt ending in ``t`` is
``(t + shift + j + k) % 100``, ``shift`` being the loaded weight of that name) but read at every
step, so the tokens after a load show which weights computed them. ``reset_prefix_cache``
refuses while requests run, as vLLM's does. The engine can pause at a given step (or at the
start of ``generate``) until the test lets it go: the tests are ordered by events, not time.
The real engine is covered by ``tests/gpu/test_vllm_engine.py``.
"""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from rlvr.rollout._common import InProcessEngine
from rlvr.rollout.base import SamplingConfig
from rlvr.rollout.vllm import VllmEngine, VllmEngineConfig, VllmRollout, VllmSteps
from tests.rollout.test_vllm_logic import FAKE_VLLM

SAMPLING_PARAMS_MODULE = textwrap.dedent(
    """
    import enum

    class RequestOutputKind(enum.Enum):
        CUMULATIVE = 0
        DELTA = 1
        FINAL_ONLY = 2
    """
)

# Appended to FAKE_VLLM (its LLM, _Flat and SimpleNamespace are in scope).
STEPPING = textwrap.dedent(
    '''
    import threading
    import time as _time
    from pathlib import Path as _Path

    from vllm.sampling_params import RequestOutputKind

    PAUSE_AT = None  # pause at the start of this step() (1: the first) and of generate()
    REACHED = threading.Event()
    RESUME = threading.Event()


    def _pause(step):
        """In this process: REACHED / RESUME. In an actor: files in $FAKE_VLLM_PAUSE_DIR."""
        folder = os.environ.get("FAKE_VLLM_PAUSE_DIR")
        at = PAUSE_AT if folder is None else int(os.environ["FAKE_VLLM_PAUSE_AT"])
        if at is None or step != at or REACHED.is_set():
            return
        REACHED.set()
        if folder is None:
            if not RESUME.wait(30):
                raise RuntimeError("the test never let the engine go on")
            return
        (_Path(folder) / "reached").touch()
        deadline = _time.monotonic() + 60
        while not (_Path(folder) / "resume").exists():
            if _time.monotonic() > deadline:
                raise RuntimeError("the test never let the engine go on")
            _time.sleep(0.01)


    def _shift(llm):
        t = llm.worker.model_runner.model.params.get("shift")
        return 0 if t is None else int(t.sum())


    class _StepEngine:
        """LLMEngine's add_request / step (see the test module's docstring)."""

        def __init__(self, llm, kw):
            self.llm = llm
            self.stream_interval = kw.get("stream_interval", 1)
            self.lag = bool(kw.get("async_scheduling"))
            self.vllm_config = SimpleNamespace(
                scheduler_config=SimpleNamespace(async_scheduling=self.lag)
            )
            self.requests = {}  # request id -> its state, while it runs
            self.in_flight = []  # (async scheduling) the outputs of the last step
            self.steps = 0
            self.added = []  # (request id, SamplingParams kwargs)

        def add_request(self, request_id, prompt, params):
            kw = dict(params.kw)
            self.added.append((request_id, kw))
            samples = [SimpleNamespace(index=j, tokens=[], sent=0, text_sent=0, done=False)
                       for j in range(kw["n"])]
            self.requests[request_id] = SimpleNamespace(
                ids=list(prompt["prompt_token_ids"]), kw=kw, samples=samples, text=None,
                kind=kw.get("output_kind", RequestOutputKind.CUMULATIVE))
            return f"{request_id}-internal"

        def has_unfinished_requests(self):
            return bool(self.requests) or bool(self.in_flight)

        def abort_request(self, request_ids, internal=False):
            for request_id in request_ids:
                self.requests.pop(request_id, None)

        def step(self):
            self.steps += 1
            _pause(self.steps)
            new = [r for r in self.requests.values() if r.text is None]
            for r in new:  # the text LLM.generate gives this call's samples
                r.text = (f"<think>batch={len(new)} seed={r.kw.get('seed')} "
                          f"resets={self.llm.resets} mp={self.llm.mp}</think><|im_end|>")
            shift = _shift(self.llm)
            outputs = []
            for request_id, r in list(self.requests.items()):
                grew = [s for s in r.samples if not s.done]
                for s in grew:
                    s.tokens.append((r.ids[-1] + shift + s.index + len(s.tokens)) % 100)
                    s.done = len(s.tokens) == r.kw["max_tokens"]
                finished = all(s.done for s in r.samples)
                for s in grew:
                    out = self._output(r, s)
                    if out is not None:
                        outputs.append(SimpleNamespace(request_id=request_id,
                                                       finished=finished, outputs=[out]))
                if finished:
                    del self.requests[request_id]
            if not self.lag:
                return outputs
            ready, self.in_flight = self.in_flight, outputs
            return ready

        def _output(self, r, s):
            n = len(s.tokens)
            if r.kind == RequestOutputKind.DELTA and not (
                s.done or s.sent == 0 or n - s.sent >= self.stream_interval
            ):
                return None
            start = s.sent if r.kind == RequestOutputKind.DELTA else 0
            cut = len(r.text) if s.done else len(r.text) * n // r.kw["max_tokens"]
            text = r.text[s.text_sent if r.kind == RequestOutputKind.DELTA else 0 : cut]
            s.sent, s.text_sent = n, cut
            logprobs = _Flat(s.tokens[start:])
            logprobs.logprobs = [-0.25 * (k + 1) for k in range(start, n)]
            return SimpleNamespace(index=s.index, token_ids=s.tokens[start:], text=text,
                                   logprobs=logprobs,
                                   finish_reason="length" if s.done else None)


    _GenerateOnly = LLM


    class LLM(_GenerateOnly):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.llm_engine = _StepEngine(self, kw)
            self.generate_calls = 0
            self.reset_at = []  # the engine's step count at each reset
            self.refused_resets = 0

        def generate(self, prompts, params, use_tqdm=True):
            self.generate_calls += 1
            _pause(1)
            return super().generate(prompts, params, use_tqdm)

        def reset_prefix_cache(self):
            if self.llm_engine.has_unfinished_requests():  # as vLLM: blocks are in use
                self.refused_resets += 1
                return False
            self.reset_at.append(self.llm_engine.steps)
            return super().reset_prefix_cache()
    '''
)


@pytest.fixture(scope="module")
def fake_vllm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fake_vllm_steps")
    (d / "vllm").mkdir()
    (d / "vllm" / "__init__.py").write_text(FAKE_VLLM + STEPPING)
    (d / "vllm" / "sampling_params.py").write_text(SAMPLING_PARAMS_MODULE)
    return d


@pytest.fixture
def fake_vllm(fake_vllm_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """The stand-in importable in this process as ``vllm`` (fresh state each test)."""
    monkeypatch.syspath_prepend(str(fake_vllm_dir))
    for name in ("vllm", "vllm.sampling_params"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import vllm

    yield vllm
    vllm.RESUME.set()  # (never leave an engine thread waiting)
    for name in ("vllm", "vllm.sampling_params"):
        sys.modules.pop(name, None)


def _engine(mid: bool, **extra) -> VllmEngine:
    return VllmEngine(VllmEngineConfig(model="/m", mid_sequence_loads=mid, extra=extra))


def _token(prompt_last: int, index: int, k: int, shift: int) -> int:
    """The fake's token ``k`` of sample ``index`` with weights ``shift``."""
    return (prompt_last + shift + index + k) % 100


PROMPTS = [[10, 11], [20], [30, 31, 32]]


@pytest.mark.parametrize(
    "sampling",
    [
        SamplingConfig(n=3, max_new_tokens=5, seed=7),
        SamplingConfig(n=1, max_new_tokens=4),
        SamplingConfig(n=2, max_new_tokens=1, seed=0),
    ],
)
@pytest.mark.parametrize(
    "extra",
    [{}, {"stream_interval": 1}, {"async_scheduling": True}],
    ids=["first-and-last", "every-token", "async"],
)
def test_stepping_the_engine_gives_the_completions_generate_gives(fake_vllm, sampling, extra):
    """Same requests, seeds, tokens, text and logprobs, in prompt order, whatever chunks
    vLLM reports a sample in."""
    plain = _engine(mid=False)
    stepped = _engine(mid=True, **extra)
    want = plain.generate(PROMPTS, sampling, prompt_offset=4)
    got = stepped.generate(PROMPTS, sampling, prompt_offset=4)
    assert got == want
    assert [c.prompt_index for c in got] == [i + 4 for i in range(3) for _ in range(sampling.n)]
    assert all((c.weights_version, c.last_weights_version) == (0, None) for c in got)
    engine = stepped._llm.llm_engine
    assert stepped._llm.generate_calls == 0 and engine.steps >= sampling.max_new_tokens
    assert [kw.get("seed") for _, kw in engine.added] == [
        sampling.seed + (4 + i) * sampling.n if sampling.seed is not None else None
        for i in range(3)
    ]
    assert not engine.has_unfinished_requests() and stepped._llm.reset_at == []


def test_the_flag_reaches_the_engine_config_from_the_spec_and_stays_out_of_vllm_arguments():
    from rlvr.config import JobSpec

    spec = JobSpec.model_validate(
        {"algorithm": {"max_staleness": 1}, "rollout": {"mid_sequence_weight_updates": True}}
    )
    cfg = VllmEngineConfig.from_spec(spec, "/models/x")
    assert cfg.mid_sequence_loads
    kw = cfg.llm_kwargs()
    assert "mid_sequence_loads" not in kw and kw["stream_interval"] > 10**6
    assert "stream_interval" not in VllmEngineConfig(model="/m").llm_kwargs()


LOAD = {"shift": torch.tensor([5.0])}
SAMPLED = SamplingConfig(n=2, max_new_tokens=6, seed=3)


@pytest.mark.parametrize("pause_at", [1, 3])
@pytest.mark.parametrize("async_scheduling", [False, True], ids=["sync", "async"])
def test_a_load_during_a_call_lands_at_the_next_step_and_tags_the_versions(
    fake_vllm, pause_at, async_scheduling
):
    """The push returns at once (held for the next step); the tokens computed after it
    use the new weights; the completions started before it carry version 0 for their first
    token and 1 for their last; the prefix cache is reset once the call's requests are
    done (vLLM refuses while they run), not before."""
    fake_vllm.PAUSE_AT = pause_at
    engine = _engine(mid=True, async_scheduling=async_scheduling)
    beside = InProcessEngine(engine, on_thread=True, loads_beside=True)
    rollout = beside.generate.remote(PROMPTS, SAMPLED)
    assert fake_vllm.REACHED.wait(30)  # the engine is at step pause_at: the call runs
    beside.load_weights.remote(LOAD, 1).get(10)  # on this thread, beside the call
    assert engine.weights_version() == 0  # held for the call's next step
    assert "shift" not in engine._llm.worker.model_runner.model.params
    fake_vllm.RESUME.set()
    completions = rollout.get(60)

    assert engine.weights_version() == 1
    steps = engine._llm.llm_engine.steps
    assert engine._llm.reset_at == [steps] and engine._llm.refused_resets == 0
    for i, c in enumerate(completions):
        last, index = PROMPTS[c.prompt_index][-1], i % SAMPLED.n
        # Steps 1..pause_at computed tokens 0..pause_at-1 with the old weights; the load
        # landed after step pause_at (async: one of those tokens came back a step later).
        assert c.token_ids == [_token(last, index, k, 0 if k < pause_at else 5) for k in range(6)]
        assert (c.weights_version, c.last_weights_version) == (0, 1)
    again = engine.generate(PROMPTS[:1], SAMPLED)  # the new weights from the first token on
    assert {(c.weights_version, c.last_weights_version) for c in again} == {(1, None)}
    assert again[0].token_ids == [_token(11, 0, k, 5) for k in range(6)]


def test_a_load_that_lands_before_a_request_starts_tags_it_with_the_new_version(fake_vllm):
    """A request reported for the first time after a load (waiting for a slot, here: added
    after it landed) carries the new version for its first token, not the call's start."""
    engine = _engine(mid=True)
    steps = VllmSteps(
        engine._llm.llm_engine,
        SamplingConfig(max_new_tokens=4),
        False,
        engine._strip,
        engine.weights_version(),
        stepper=engine._stepper(),
    )
    with engine._order.call(), engine._prefix_reset_at_end():
        steps.add(0, [10], 4)
        assert steps.step() == []  # token 0, old weights
        engine.load_weights(LOAD, 1)  # held: lands after the next step
        assert steps.step() == []  # token 1, old weights; the load lands
        steps.add(1, [20], 2)  # a continuation that starts on the new weights
        done = dict(steps.step() + steps.step())
        assert engine._llm.reset_at == []  # not while requests run
    assert engine._llm.reset_at == [4]
    assert done[0].token_ids == [10, 11, 17, 18]
    assert (done[0].weights_version, done[0].last_weights_version) == (0, 1)
    assert done[1].token_ids == [25, 26]
    assert (done[1].weights_version, done[1].last_weights_version) == (1, None)


def test_without_the_flag_a_push_during_a_call_lands_after_it(fake_vllm):
    """The engine actor's one thread: the push waits behind the rollout, which keeps the
    weights it started with."""
    fake_vllm.PAUSE_AT = 1  # (generate pauses at its start)
    engine = _engine(mid=False)
    actor_like = InProcessEngine(engine, on_thread=True)
    rollout = actor_like.generate.remote(PROMPTS, SAMPLED)
    assert fake_vllm.REACHED.wait(30)
    push = actor_like.load_weights.remote(LOAD, 1)  # queued behind the rollout
    with pytest.raises(TimeoutError):  # (it cannot run: the engine's thread is held)
        push.get(0.05)
    fake_vllm.RESUME.set()
    whole = rollout.get(60)
    push.get(10)
    assert engine._llm.generate_calls == 1 and engine._llm.llm_engine.steps == 0
    assert {(c.weights_version, c.last_weights_version) for c in whole} == {(0, None)}
    assert [c.token_ids for c in whole][:2] == [
        [_token(11, j, k, 0) for k in range(6)] for j in range(2)
    ]
    assert engine.weights_version() == 1 and engine._llm.resets == 1


def test_an_error_mid_call_aborts_the_calls_requests(fake_vllm, monkeypatch):
    engine = _engine(mid=True)
    llm_engine = engine._llm.llm_engine
    real_step = llm_engine.step

    def failing_step():
        if llm_engine.steps == 2:
            raise RuntimeError("engine died")
        return real_step()

    monkeypatch.setattr(llm_engine, "step", failing_step)
    with pytest.raises(RuntimeError, match="engine died"):
        engine.generate(PROMPTS, SAMPLED)
    assert not llm_engine.has_unfinished_requests()  # the next call starts clean


def test_an_engine_actor_takes_a_push_beside_a_running_rollout(
    ray_cluster, fake_vllm_dir, tmp_path
):
    """The engine's side of a push runs in a concurrency group of its own: a learner's
    sender formed and pushing while the rollout is paused mid-call returns (without the
    group it would queue behind the rollout), and the load lands at the rollout's next
    step."""
    import os

    import ray

    from rlvr.rollout.weight_sync import WeightSender

    path = os.pathsep.join([str(fake_vllm_dir), os.environ.get("PYTHONPATH", "")])
    env = {"PYTHONPATH": path, "FAKE_VLLM_PAUSE_DIR": str(tmp_path), "FAKE_VLLM_PAUSE_AT": "2"}
    rollout = VllmRollout(
        VllmEngineConfig(model="/m", mid_sequence_loads=True),
        replicas=1,
        num_gpus=0,
        num_cpus=0,
        runtime_env={"env_vars": env},
        start_timeout_s=120,
        call_timeout_s=120,
    )
    try:
        pending = rollout.submit(PROMPTS, SAMPLED)
        deadline = time.monotonic() + 60
        while not (tmp_path / "reached").exists():  # the engine is at its second step
            assert time.monotonic() < deadline, "the rollout never reached its second step"
            time.sleep(0.01)
        # Formed now, the sender asks the engine for its GPU, then pushes: both beside it.
        sender = WeightSender(rollout.replicas.engines, method="auto", timeout_s=30)
        assert sender.method == "object_store"
        sender.push(LOAD, version=1, after_calls=rollout.replicas.calls_made())
        ready, _ = ray.wait(pending.refs, timeout=0)
        assert not ready
        (tmp_path / "resume").touch()
        completions = pending.result()
        assert rollout.weights_version() == 1
        assert {(c.weights_version, c.last_weights_version) for c in completions} == {(0, 1)}
        assert completions[0].token_ids == [_token(11, 0, k, 0 if k < 2 else 5) for k in range(6)]
        [engine] = rollout.replicas.engines
        assert ray.get(engine.param_sum.remote("shift"), timeout=60) == 5.0
    finally:
        rollout.shutdown()
