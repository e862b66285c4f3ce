"""Multi-turn rollouts with tools (docs/tools.md): the engine-agnostic driver.

Each sequence alternates model turns and tool outputs::

    prompt | model turn ... <tool name="python">code</tool> | <output>result</output> | model ...

A model turn ends at the call's close marker (a stop string); the call runs in the
:class:`~rlvr.tools.runner.ToolRunner`'s pool; its output is tokenized and appended as
context the model did not write (``model_mask`` False, logprob 0.0); the model continues
from the whole sequence. It stops at EOS, another stop string, ``tools.max_turns`` model
turns, or when the completion's tokens (model and tool) reach ``max_new_tokens``: the
total budget. A call in the last allowed turn is not run.

The engine supplies ``sample(contexts, max_new_tokens)``: one continuation per context
(n=1), with the turn's stop strings. Turns are batched: every sequence that called a tool
continues together once the turn's calls are done (:meth:`ToolLoop.run`). An engine that
schedules requests continuously (vLLM) supplies a :class:`StepSampler` instead, and each
sequence continues as soon as its own call returns (:meth:`ToolLoop.run_streaming`).
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field

from rlvr.rollout.base import Completion
from rlvr.tools.base import ToolResult
from rlvr.tools.protocol import truncate_tokens
from rlvr.tools.runner import ToolRunner

# sample(contexts, max_new_tokens) -> one Completion per context, same order
Sampler = Callable[[list[list[int]], int], list[Completion]]


class StepSampler(typing.Protocol):
    """An engine that schedules requests continuously (:meth:`ToolLoop.run_streaming`)."""

    def add(self, key: int, context: list[int], max_new_tokens: int) -> None:
        """Start sampling one continuation of ``context`` (n=1, the turn's stop strings)."""

    def step(self) -> list[tuple[int, Completion]]:
        """Advance the running batch; the (key, turn) of each continuation that finished."""

    def has_unfinished(self) -> bool:
        """Whether any added continuation has not come back from :meth:`step` yet."""


@dataclass
class _Seq:
    prompt_index: int
    prompt: list[int]
    tokens: list[int] = field(default_factory=list)
    mask: list[bool] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    finish: str = "length"
    version: int | None = None  # the weights of its first turn
    last_version: int | None = None  # of its last token, where newer weights landed since
    calls: int = 0
    errors: int = 0
    time_s: float = 0.0
    turns: int = 0
    forged: int = 0


class ToolLoop:
    """Drives the turns of a batch of sequences for one engine.

    Args:
        runner: the enabled tools and their pool.
        encode: text -> token ids (no special tokens added).
        decode: token ids -> text (the engine's completion text, control tokens stripped).
        eos_ids: the tokens that end a sequence.
    """

    def __init__(
        self,
        runner: ToolRunner,
        encode: Callable[[str], list[int]],
        decode: Callable[[list[int]], str],
        eos_ids: Sequence[int],
    ) -> None:
        self.runner = runner
        self.protocol = runner.protocol
        self.encode = encode
        self.decode = decode
        self.eos_ids = frozenset(eos_ids)

    def run(
        self,
        prompts: list[list[int]],
        first: list[Completion],
        sample: Sampler,
        max_new_tokens: int,
        first_is_model: bool = True,
    ) -> list[Completion]:
        """Continue the first turns ``first`` (``prompt_index`` into ``prompts``) until
        every sequence is done; one Completion per entry of ``first``, same order.

        ``first_is_model=False`` marks the first turns as given text rather than sampled
        (masked out like tool output): the hook that lets a test or a demo force a call.
        """
        seqs = [_Seq(c.prompt_index, prompts[c.prompt_index]) for c in first]
        active = self._add_turns(
            seqs, list(range(len(seqs))), first, max_new_tokens, first_is_model
        )
        while active:
            active = self._run_tools(seqs, active, max_new_tokens)
            if not active:
                break
            budget = max(max_new_tokens - len(seqs[i].tokens) for i in active)
            turns = sample([seqs[i].prompt + seqs[i].tokens for i in active], budget)
            active = self._add_turns(seqs, active, turns, max_new_tokens, True)
        return [self._completion(s) for s in seqs]

    def _add_turns(
        self,
        seqs: list[_Seq],
        rows: list[int],
        turns: list[Completion],
        max_new_tokens: int,
        is_model: bool,
    ) -> list[int]:
        """Append each row's turn; the rows that ended with a tool call to run."""
        calling = []
        for i, turn in zip(rows, turns, strict=True):
            s = seqs[i]
            room = max_new_tokens - len(s.tokens)
            tokens, logprobs = turn.token_ids[:room], turn.logprobs[:room]
            text = self.decode(tokens)
            stripped, forged = self.protocol.strip_forged(text)
            s.tokens += tokens
            s.mask += [is_model] * len(tokens)
            s.logprobs += logprobs if is_model else [0.0] * len(tokens)
            s.text.append(stripped)
            s.forged += forged
            s.turns += 1
            if s.version is None:
                s.version = turn.weights_version
            newest = (
                turn.weights_version
                if turn.last_weights_version is None
                else turn.last_weights_version
            )
            if newest != s.version:
                s.last_version = newest
            cut = len(tokens) < len(turn.token_ids)
            s.finish = "length" if cut else turn.finish_reason
            ended_by_eos = bool(tokens) and tokens[-1] in self.eos_ids
            # The close marker is a stop string: a turn holding a complete call ended there
            # (its last token may run past the marker with a BPE tokenizer).
            called = (
                not cut
                and not ended_by_eos
                and turn.finish_reason == "stop"
                and self.protocol.find_call(text) is not None
            )
            if called and s.turns < self.runner.config.max_turns and len(s.tokens) < max_new_tokens:
                calling.append(i)
        return calling

    def run_streaming(
        self,
        prompts: list[list[int]],
        first: list[Completion],
        sampler: StepSampler,
        max_new_tokens: int,
    ) -> list[Completion]:
        """Like :meth:`run`, but each sequence continues as soon as its own call returns.

        ``sampler`` is an engine that schedules requests continuously (vLLM's step loop):
        a continuation is added the moment its tool output is appended and joins the
        running batch, so one slow call holds back only its own sequence. Each
        continuation's budget is its own sequence's remaining tokens.
        """
        seqs = [_Seq(c.prompt_index, prompts[c.prompt_index]) for c in first]
        calling = self._add_turns(seqs, list(range(len(seqs))), first, max_new_tokens, True)
        pending = {self._submit(seqs[i]): i for i in calling}
        while pending or sampler.has_unfinished():
            done = [f for f in pending if f.done()]
            if not done and not sampler.has_unfinished():  # only tools are running
                done = list(wait(pending, return_when=FIRST_COMPLETED).done)
            for future in done:
                i = pending.pop(future)
                s = seqs[i]
                if self._append_output(s, future.result(), max_new_tokens):
                    sampler.add(i, s.prompt + s.tokens, max_new_tokens - len(s.tokens))
            if sampler.has_unfinished():
                for i, turn in sampler.step():
                    for j in self._add_turns(seqs, [i], [turn], max_new_tokens, True):
                        pending[self._submit(seqs[j])] = j
        return [self._completion(s) for s in seqs]

    def _submit(self, s: _Seq) -> Future[ToolResult]:
        call = self.protocol.find_call(s.text[-1])
        assert call is not None  # _add_turns checked it
        return self.runner.submit(call)

    def _run_tools(self, seqs: list[_Seq], rows: list[int], max_new_tokens: int) -> list[int]:
        """Run each row's call (all in the pool at once), append the outputs; the rows that
        still have room for a model turn."""
        futures = [self._submit(seqs[i]) for i in rows]
        return [
            i
            for i, future in zip(rows, futures, strict=True)
            if self._append_output(seqs[i], future.result(), max_new_tokens)
        ]

    def _append_output(self, s: _Seq, result: ToolResult, max_new_tokens: int) -> bool:
        """Append a call's output (masked out); whether there is room left for a model turn."""
        s.calls += 1
        s.errors += int(result.error)
        s.time_s += result.time_s
        body, _ = truncate_tokens(
            self.encode(result.output), self.runner.config.max_output_tokens, self.encode
        )
        wrapped = self.protocol.wrap_output(self.decode(body))
        ids = self.encode(wrapped)
        room = max_new_tokens - len(s.tokens)
        s.tokens += ids[:room]
        s.mask += [False] * len(ids[:room])
        s.logprobs += [0.0] * len(ids[:room])
        s.text.append(self.decode(ids[:room]))
        if len(ids) >= room:
            s.finish = "length"
            return False
        return True

    def _completion(self, s: _Seq) -> Completion:
        return Completion(
            prompt_index=s.prompt_index,
            token_ids=s.tokens,
            text="".join(s.text),
            logprobs=s.logprobs,
            finish_reason=s.finish,
            weights_version=s.version or 0,
            last_weights_version=s.last_version,
            model_mask=s.mask,
            tool_calls=s.calls,
            tool_errors=s.errors,
            tool_time_s=s.time_s,
            turns=s.turns,
            forged_outputs=s.forged,
        )
