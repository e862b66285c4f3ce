"""The GPU rollout engine: vLLM's ``LLM`` inside Ray actors, several replicas, fast weight sync.

Two layers, both small:

- :class:`VllmEngine` is the body of one Ray actor. It owns a vLLM ``LLM`` whose engine core
  runs in the actor's own process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so weights handed
  to it as tensors reach the model directly through ``collective_rpc`` +
  ``model.load_weights`` (with a separate engine-core process, tensors in the RPC's arguments
  would be serialized to lists). It samples ``n`` completions per prompt with the logprob of
  every sampled token (``SamplingParams(logprobs=0)``, ``logprobs_mode="processed_logprobs"``
  so the logprobs are those of the distribution actually sampled: after temperature and
  top-p), and resets the prefix cache after every weight update (cached KV blocks were
  computed by the old weights). With ``mid_sequence_loads`` it drives vLLM's scheduler step
  by step instead of ``LLM.generate``, so a weight push lands between two decoding steps of
  a running call (``rollout.mid_sequence_weight_updates``).
- :class:`VllmRollout` is the driver-side :class:`~rlvr.rollout.base.RolloutEngine`: it places
  ``replicas`` engine actors with a placement group (``num_gpus`` each: a fraction when the
  learner shares the card, 1 when each replica has its own), spreads the prompts of a
  ``generate`` call across them in contiguous slices, and loads new weights through the object
  store (one ``ray.put``, one ObjectRef to every replica). Learners that hold their weights on
  a GPU push them faster with :class:`rlvr.rollout.weight_sync.WeightSender` (CUDA IPC / NCCL)
  using ``rollout.replicas.engines``.

    rollout = VllmRollout(VllmEngineConfig(model="/path/to/hf_dir", gpu_memory_utilization=0.35),
                          replicas=2, num_gpus=0.5)
    completions = rollout.generate(prompt_ids, SamplingConfig(n=8, max_new_tokens=256))
    rollout.load_weights(learner.state_dict(), version=1)

This module imports without vLLM (it is imported inside the actor); Ray and torch are needed.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch

from rlvr.config import JobSpec
from rlvr.models.causal_lm import precision
from rlvr.rollout._common import (
    MARKUP_TOKENS,
    LoadOrder,
    PendingRollout,
    ReplicaGroup,
    actor_with_loads_beside,
    strip_tokens,
    validate_request,
)
from rlvr.rollout.base import Completion, SamplingConfig
from rlvr.rollout.weight_sync import (
    WeightLayout,
    current_gpu_uuid,
    pack_weights,
    unpack_payload,
    unpack_weights,
)
from rlvr.tools.runner import ToolsConfig

# Set in every engine actor before vLLM is imported (see the module docstring).
ENGINE_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}

# The engine's side of a weight push (rlvr.rollout.weight_sync): the receivers, joining the
# sender's NCCL group and telling it this engine's GPU (a sender formed at the first push
# asks; it waits for every engine to join its group). With mid-sequence loads they all run
# beside a rollout (actor_with_loads_beside), so neither a push nor joining waits for one.
_PUSH_METHODS = (
    "gpu_uuid",
    "init_weight_group",
    "load_weights",
    "load_packed",
    "load_ipc",
    "load_broadcast",
)

# vLLM's ``stream_interval`` for an engine that takes loads mid-sequence: a request driven
# step by step with DELTA outputs then reports its first token (which weights computed it)
# and its end, and nothing in between (every step's output would cost host time per
# sequence). ``LLM.generate`` (FINAL_ONLY) and the tool loop's requests are unaffected.
_STREAM_FIRST_AND_LAST = 1 << 30


@dataclass
class VllmEngineConfig:
    """How to build one vLLM engine. Fields map onto ``vllm.LLM(...)`` arguments.

    Attributes:
        model: a local HF model directory (or hub id where a hub is reachable).
        dtype: weights/activations dtype in the engine.
        gpu_memory_utilization: fraction of the GPU's memory vLLM may use (weights + KV
            cache); ~0.3-0.4 when the learner shares the GPU.
        kv_cache_memory_bytes: a fixed KV cache size instead of profiling for it; lets several
            engines start on one GPU at the same time (profiling assumes no other process
            changes its memory meanwhile).
        max_model_len: prompt + completion limit; None = the model's.
        enforce_eager: skip torch.compile and CUDA graphs (starts ~3x faster, decodes slower).
        enable_prefix_caching: share KV blocks of common prefixes (the group's prompt).
        max_num_seqs: sequences decoded at once; None = vLLM's default.
        seed: engine seed (sampling is reproducible per request only with SamplingConfig.seed).
        extra: any other ``vllm.LLM`` keyword arguments.
        tools: the job's tool use (docs/tools.md); None or nothing enabled: one turn.
        mid_sequence_loads: a weight load that arrives during a call lands at its next
            decoding step (``rollout.mid_sequence_weight_updates``; :class:`VllmEngine`);
            not a ``vllm.LLM`` argument.
    """

    model: str
    dtype: str = "bfloat16"
    gpu_memory_utilization: float = 0.35
    kv_cache_memory_bytes: int | None = None
    max_model_len: int | None = None
    enforce_eager: bool = False
    enable_prefix_caching: bool = True
    max_num_seqs: int | None = None
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    tools: ToolsConfig | None = None
    mid_sequence_loads: bool = False

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("model must name a model directory or id")
        if not 0 < self.gpu_memory_utilization <= 0.95:
            raise ValueError(
                f"gpu_memory_utilization must be in (0, 0.95], got {self.gpu_memory_utilization}"
            )
        if self.kv_cache_memory_bytes is not None and self.kv_cache_memory_bytes <= 0:
            raise ValueError("kv_cache_memory_bytes must be positive (or None to profile)")
        if self.max_model_len is not None and self.max_model_len < 2:
            raise ValueError("max_model_len must be >= 2 (or None for the model's own)")
        names = {f.name for f in fields(self)}
        clash = names & set(self.extra)
        if clash:
            raise ValueError(f"extra repeats field(s) {sorted(clash)}: set them directly")

    def llm_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``vllm.LLM``."""
        kw: dict[str, Any] = {
            "model": self.model,
            "dtype": self.dtype,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "enforce_eager": self.enforce_eager,
            "enable_prefix_caching": self.enable_prefix_caching,
            "seed": self.seed,
            # Logprobs of the distribution sampled from (after temperature / top-p): these
            # are the behaviour policy's logprobs that importance ratios need.
            "logprobs_mode": "processed_logprobs",
        }
        for name in ("kv_cache_memory_bytes", "max_model_len", "max_num_seqs"):
            if getattr(self, name) is not None:
                kw[name] = getattr(self, name)
        if self.mid_sequence_loads:
            kw["stream_interval"] = _STREAM_FIRST_AND_LAST
        kw.update(self.extra)
        return kw

    @classmethod
    def from_spec(cls, spec: JobSpec, model_path: str, **overrides: Any) -> VllmEngineConfig:
        """From a :class:`rlvr.config.JobSpec` and the resolved model directory."""
        dtype = str(precision(spec.model.dtype, "cuda").weights).removeprefix("torch.")
        max_len = spec.data.max_prompt_tokens + spec.rollout.max_new_tokens
        kw: dict[str, Any] = dict(
            model=model_path,
            dtype=dtype,
            gpu_memory_utilization=spec.rollout.gpu_memory_utilization,
            max_model_len=max_len,
            seed=spec.algorithm.seed,
            tools=ToolsConfig.from_spec(spec.tools) if spec.tools.enabled else None,
            mid_sequence_loads=spec.rollout.mid_sequence_weight_updates,
        )
        kw.update(overrides)
        return cls(**kw)


# -- pure request/response logic (tested on CPU) ----------------------------------------------
def sampling_params_kwargs(
    sampling: SamplingConfig, num_prompts: int, prompt_offset: int = 0, ignore_eos: bool = False
) -> list[dict[str, Any]]:
    """``vllm.SamplingParams`` keyword arguments: one dict shared by all prompts, or (with a
    seed) one per prompt.

    With ``sampling.seed``, prompt ``i`` (its index in the whole call, ``prompt_offset + i``)
    gets seed ``seed + i * n`` and vLLM seeds its ``n`` samples ``+0 … +n-1``, so every sample
    has its own stream and the result does not depend on how prompts are spread over replicas.
    """
    base: dict[str, Any] = {
        "n": sampling.n,
        "max_tokens": sampling.max_new_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "stop": list(sampling.stop) or None,
        # The text must match the token ids the learner trains on, and verifiers look for
        # closing tags such as </answer>: keep the stop string.
        "include_stop_str_in_output": True,
        "logprobs": 0,  # the sampled token's logprob only
        "flat_logprobs": True,  # a few flat lists per completion instead of a dict per token
        "skip_special_tokens": False,  # markup tokens stay; control tokens are stripped after
        "spaces_between_special_tokens": False,
        "ignore_eos": ignore_eos,
    }
    if sampling.seed is None:
        return [base]
    return [
        {**base, "seed": sampling.seed + (prompt_offset + i) * sampling.n}
        for i in range(num_prompts)
    ]


def sampled_logprobs(token_ids: Sequence[int], logprobs: Any) -> list[float]:
    """The logprob of each sampled token from vLLM's per-position logprobs.

    Accepts both vLLM formats: ``FlatLogprobs`` (parallel flat lists with start/end indices per
    position) and a list of ``{token_id: Logprob}`` dicts.
    """
    if logprobs is None:
        raise RuntimeError("vLLM returned no logprobs: SamplingParams.logprobs must be 0, not None")
    if len(logprobs) != len(token_ids):
        raise RuntimeError(f"vLLM returned {len(logprobs)} logprobs for {len(token_ids)} tokens")
    out: list[float] = []
    if hasattr(logprobs, "start_indices"):  # FlatLogprobs
        flat_ids, flat_lp = logprobs.token_ids, logprobs.logprobs
        for pos, tok in enumerate(token_ids):
            start, end = logprobs.start_indices[pos], logprobs.end_indices[pos]
            # vLLM puts the sampled token first; search the rest in case it ever does not.
            for k in range(start, end):
                if flat_ids[k] == tok:
                    out.append(float(flat_lp[k]))
                    break
            else:
                raise RuntimeError(f"no logprob for sampled token {tok} at position {pos}")
        return out
    for pos, tok in enumerate(token_ids):
        entry = logprobs[pos]
        if entry is None or tok not in entry:
            raise RuntimeError(f"no logprob for sampled token {tok} at position {pos}")
        out.append(float(entry[tok].logprob))
    return out


def _check_finished(prompt_index: int, finish_reason: str | None) -> str:
    """``finish_reason`` of a sample vLLM finished normally; else RuntimeError."""
    if finish_reason not in ("stop", "length"):
        raise RuntimeError(
            f"vLLM finished prompt {prompt_index} with {finish_reason!r} "
            "(aborted or errored request)"
        )
    return finish_reason


def completions_from_outputs(
    outputs: Sequence[Any],
    prompt_offset: int,
    strip: frozenset[str] | set[str],
    weights_version: int = 0,
) -> list[Completion]:
    """vLLM ``RequestOutput``s (one per prompt, in order) → Completions, by prompt then sample."""
    completions: list[Completion] = []
    for i, out in enumerate(outputs):
        for c in sorted(out.outputs, key=lambda c: c.index):
            finish = _check_finished(prompt_offset + i, c.finish_reason)
            token_ids = list(c.token_ids)
            completions.append(
                Completion(
                    prompt_index=prompt_offset + i,
                    token_ids=token_ids,
                    text=strip_tokens(c.text, strip),
                    logprobs=sampled_logprobs(token_ids, c.logprobs),
                    finish_reason=finish,
                    weights_version=weights_version,
                )
            )
    return completions


@dataclass
class _Streamed:
    """One sample of a request driven step by step (:meth:`VllmEngine._sample_steps`), put
    together from vLLM's DELTA outputs, with the weights versions that computed its first
    and its last tokens.

    ``LLM.generate`` asks for the final output only; a step-driven request asks for deltas
    (``RequestOutputKind.DELTA``) because the first one tells which step sampled the first
    token. With ``stream_interval`` :data:`_STREAM_FIRST_AND_LAST` a sample sends two: its
    first token(s), then the rest at its end.
    """

    index: int  # among its prompt's n samples
    seen_version: int  # the version of the step that first reported it
    first_version: int | None = None  # its first token's
    last_version: int | None = None  # its last token's
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str | None = None

    def add(self, delta: Any, version: int) -> None:
        """Append one DELTA ``CompletionOutput``, whose tokens ``version`` computed."""
        new = list(delta.token_ids)
        if new:  # (vLLM slices a delta's logprobs by its token count: none without tokens)
            self.logprobs += sampled_logprobs(new, delta.logprobs)
            self.token_ids += new
            if self.first_version is None:
                self.first_version = version
            self.last_version = version
        self.text += delta.text
        if delta.finish_reason is not None:
            self.finish_reason = delta.finish_reason

    def completion(self, prompt_index: int, strip: frozenset[str] | set[str]) -> Completion:
        first = self.seen_version if self.first_version is None else self.first_version
        last = first if self.last_version is None else self.last_version
        return Completion(
            prompt_index=prompt_index,
            token_ids=self.token_ids,
            text=strip_tokens(self.text, strip),
            logprobs=self.logprobs,
            finish_reason=_check_finished(prompt_index, self.finish_reason),
            weights_version=first,
            last_weights_version=None if last == first else last,
        )


class _Stepper:
    """``llm_engine.step()`` for an engine that takes weight loads mid-sequence: the loads
    that arrived meanwhile land after each step (:meth:`LoadOrder.at_step`, on this, the
    stepping thread, so ``collective_rpc`` never runs beside a step), and each step says
    which weights version computed the tokens it returns.

    Without async scheduling a step computes and returns its own tokens: the version
    current when it is called. With it (vLLM's default) a step launches the next batch
    and then returns the tokens of the batch the call before launched, computed by the
    version current at that call: a load waits for the batch in flight (``VllmEngine
    ._load``) and the next call's batch is the first on the new weights.
    """

    def __init__(self, llm_engine: Any, order: LoadOrder, version: Callable[[], int]) -> None:
        self.engine = llm_engine
        self._order = order
        self._version = version
        config = getattr(llm_engine, "vllm_config", None)
        scheduler = getattr(config, "scheduler_config", None)
        self._lagged = bool(getattr(scheduler, "async_scheduling", False))
        self._previous = version()  # the version at the last call

    def step(self) -> tuple[list[Any], int]:
        """One ``step()``'s outputs and the version of the tokens in them."""
        now = self._version()
        computed_by = self._previous if self._lagged else now
        self._previous = now
        outputs = self.engine.step()
        self._order.at_step()
        return outputs, computed_by


class VllmSteps:
    """The vLLM side of ``ToolLoop.run_streaming`` (:mod:`rlvr.rollout.tool_loop`): each
    continuation is one request on the engine's own scheduler (``LLMEngine.add_request``
    / ``step``), so a continuation joins the running batch as soon as its tool returns
    instead of waiting for the slowest call of its turn.

    Args:
        llm_engine: ``vllm.LLM(...).llm_engine``.
        turn: the sampling of a turn (stop strings include the call's close marker);
            continuations are sampled with ``n=1`` and their own budget.
        seed_base: the first sequence's index in the whole call (``prompt_offset * n``).
            With ``turn.seed``, continuation ``k`` of sequence ``key`` gets seed
            ``turn.seed + (seed_base + key) * 1_000_003 + k``: reproducible whatever order
            the tools return in, and whatever the spreading over replicas.
        stepper: (weight loads mid-sequence) steps the engine and lands loads between
            steps; a continuation's versions are then those of its first and last tokens.
    """

    def __init__(
        self,
        llm_engine: Any,
        turn: SamplingConfig,
        ignore_eos: bool,
        strip: frozenset[str],
        version: int,
        seed_base: int = 0,
        stepper: _Stepper | None = None,
    ) -> None:
        self.engine, self.turn, self.ignore_eos = llm_engine, turn, ignore_eos
        self.strip, self.version, self.seed_base = strip, version, seed_base
        self._stepper = stepper
        self._first: dict[str, int] = {}  # request id -> its first token's version
        self._requests: dict[str, int] = {}  # request id -> key
        self._count: dict[int, int] = {}  # continuations per key so far
        self._uid = f"{os.getpid()}-{time.monotonic_ns()}"

    def add(self, key: int, context: list[int], max_new_tokens: int) -> None:
        from vllm import SamplingParams

        k = self._count[key] = self._count.get(key, 0) + 1
        seed = None
        if self.turn.seed is not None:
            seed = self.turn.seed + (self.seed_base + key) * 1_000_003 + k
        sampling = replace(self.turn, n=1, max_new_tokens=max_new_tokens, seed=seed)
        [kw] = sampling_params_kwargs(sampling, 1, 0, self.ignore_eos)
        request_id = f"tool-{self._uid}-{key}-{k}"
        self._requests[request_id] = key
        self.engine.add_request(
            request_id, {"prompt_token_ids": list(context)}, SamplingParams(**kw)
        )

    def step(self) -> list[tuple[int, Completion]]:
        if self._stepper is None:
            outputs, version = self.engine.step(), self.version
        else:
            outputs, version = self._stepper.step()
        done = []
        for out in outputs:
            if out.request_id not in self._requests:
                continue
            # (a request is reported from its first token on: every step, or at its end)
            first = self._first.setdefault(out.request_id, version)
            if out.finished:
                key = self._requests.pop(out.request_id)
                del self._first[out.request_id]
                [turn] = completions_from_outputs([out], 0, self.strip, first)
                if version != first:
                    turn.last_weights_version = version
                done.append((key, turn))
        return done

    def has_unfinished(self) -> bool:
        return bool(self._requests)


def _load_on_worker(worker: Any, weights: list[tuple[str, torch.Tensor]]) -> None:
    # Runs inside vLLM's worker (this process: the engine core is in-process). load_weights
    # maps HF names onto vLLM's fused parameters and copies in place.
    worker.model_runner.model.load_weights(weights=weights)


def _param_sum_on_worker(worker: Any, name: str) -> float:
    params = dict(worker.model_runner.model.named_parameters())
    if name not in params:
        raise KeyError(f"no parameter {name!r} in the vLLM model")
    return float(params[name].float().sum())


# -- the actor ---------------------------------------------------------------------------------
class VllmEngine:
    """One vLLM engine; the body of a Ray actor (``ray.remote(VllmEngine)``).

    The engine side of :class:`~rlvr.rollout.base.RolloutEngine` (``generate`` of one slice,
    ``load_weights``, ``weights_version``) plus the receiving ends of
    :mod:`rlvr.rollout.weight_sync` (``load_packed``, ``load_ipc``, ``init_weight_group`` +
    ``load_broadcast``).

    Weight loads mid-sequence (``config.mid_sequence_loads``): ``LLM.generate`` runs a call
    to its end, so a call instead adds its requests to vLLM's scheduler and steps it itself
    (``LLMEngine.add_request`` / ``step``, as the tool loop's :class:`VllmSteps`); a load
    that arrives meanwhile (in the actor's "weights" concurrency group,
    :func:`~rlvr.rollout._common.actor_with_loads_beside`) is held by the :class:`LoadOrder` and lands between
    two steps, on the stepping thread. The completions are those ``generate`` gives (same
    requests, seeds and outputs), tagged with the versions of their first and last tokens.

    The prefix cache is reset after every load, but vLLM refuses while requests hold KV
    blocks: a load that lands mid-call resets it at the call's end instead. Until then a
    request that starts after the load may reuse prompt KV blocks the previous weights
    computed (its group's prompt, mostly) — the staleness mid-sequence updates already
    accept for a running sequence's own earlier tokens, whose KV is kept too. Its logprobs
    are still those of the distribution it was sampled from.
    """

    def __init__(self, config: VllmEngineConfig) -> None:
        # Before vLLM is imported: keep the engine core in this process (module docstring).
        os.environ.update(ENGINE_ENV)
        from vllm import LLM

        self.config = config
        t0 = time.perf_counter()
        self._llm = LLM(**config.llm_kwargs())
        self.start_s = time.perf_counter() - t0
        tokenizer = self._llm.get_tokenizer()
        self._strip = frozenset(getattr(tokenizer, "all_special_tokens", ())) - MARKUP_TOKENS
        self._version = 0
        # weight loads behind the rollouts submitted before them (or mid-sequence)
        self._order = LoadOrder(mid_sequence=config.mid_sequence_loads)
        self._stepping = False  # (mid-sequence) a call is stepping the engine itself
        self._prefix_stale = False  # (mid-sequence) a load landed mid-call: reset at its end
        self._group: Any = None  # NCCL weight-sync group, formed on request
        self._tool_loop: Any = None  # a ToolLoop, built on the first call with tools

    # RolloutEngine -----------------------------------------------------------------------------
    def generate(
        self,
        prompt_token_ids: list[list[int]],
        sampling: SamplingConfig,
        ignore_eos: bool = False,
        prompt_offset: int = 0,
    ) -> list[Completion]:
        """``sampling.n`` completions per prompt, ordered by prompt; ``prompt_index`` counts
        from ``prompt_offset`` (the slice's start when a VllmRollout spreads prompts)."""
        with self._order.call():  # a weight load held for this call lands when it ends
            validate_request(prompt_token_ids, sampling)
            if not prompt_token_ids:
                return []
            with self._prefix_reset_at_end():
                if self.config.tools and self.config.tools.enabled:
                    return self._generate_with_tools(
                        prompt_token_ids, sampling, ignore_eos, prompt_offset
                    )
                return self._sample(prompt_token_ids, sampling, ignore_eos, prompt_offset)

    @contextlib.contextmanager
    def _prefix_reset_at_end(self) -> Iterator[None]:
        """(Mid-sequence) The steps of one call: a load that lands between them marks the
        prefix cache stale, and it is reset here, once the call's requests have ended
        (vLLM's ``reset_prefix_cache`` refuses while requests hold KV blocks). Loads that
        land later (at the call's end, or between calls) reset it at once."""
        if not self._order.mid_sequence:
            yield
            return
        self._stepping = True
        try:
            yield
        finally:
            self._stepping = False
            if self._prefix_stale:
                self._prefix_stale = False
                self._reset_prefix_cache()

    def _sample(
        self,
        prompt_token_ids: list[list[int]],
        sampling: SamplingConfig,
        ignore_eos: bool,
        prompt_offset: int,
    ) -> list[Completion]:
        from vllm import SamplingParams

        kws = sampling_params_kwargs(sampling, len(prompt_token_ids), prompt_offset, ignore_eos)
        if self._order.mid_sequence:
            return self._sample_steps(prompt_token_ids, kws, sampling.n, prompt_offset)
        params = [SamplingParams(**kw) for kw in kws]
        outputs = self._llm.generate(
            [{"prompt_token_ids": list(p)} for p in prompt_token_ids],
            params[0] if len(params) == 1 else params,
            use_tqdm=False,
        )
        return completions_from_outputs(outputs, prompt_offset, self._strip, self._version)

    def _sample_steps(
        self, prompt_token_ids: list[list[int]], kws: list[dict[str, Any]], n: int, offset: int
    ) -> list[Completion]:
        """:meth:`_sample` on vLLM's own scheduler, one ``step()`` at a time, weight loads
        landing between steps: the requests ``LLM.generate`` would add (same sampling
        parameters, so the same seeds and ``n`` samples), stepped until all have ended (as
        ``LLM.generate`` does), in prompt order. Each completion's ``weights_version`` is
        that of the step that computed its first token; ``last_weights_version`` that of
        its last token's where a load landed in between (else None)."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        engine = self._llm.llm_engine
        uid = f"{os.getpid()}-{time.monotonic_ns()}"
        # request id -> its samples by index (vLLM fans a request out into n samples)
        samples: dict[str, dict[int, _Streamed]] = {
            f"mid-{uid}-{i}": {} for i in range(len(prompt_token_ids))
        }
        stepper = self._stepper()
        try:
            for i, (request_id, prompt) in enumerate(zip(samples, prompt_token_ids, strict=True)):
                kw = kws[i] if len(kws) > 1 else kws[0]
                params = SamplingParams(**kw, output_kind=RequestOutputKind.DELTA)
                engine.add_request(request_id, {"prompt_token_ids": list(prompt)}, params)
            while engine.has_unfinished_requests():
                outputs, version = stepper.step()
                for out in outputs:
                    by_index = samples.get(out.request_id)
                    if by_index is None:  # (not this call's: none should run beside it)
                        continue
                    for delta in out.outputs:
                        if delta.index not in by_index:
                            by_index[delta.index] = _Streamed(delta.index, version)
                        by_index[delta.index].add(delta, version)
        except BaseException:
            # Leave no request behind in the engine: the next call and the prefix-cache
            # reset need it empty (the error that stopped the loop is the one to raise).
            with contextlib.suppress(Exception):
                engine.abort_request(list(samples))
            raise
        completions: list[Completion] = []
        for i, by_index in enumerate(samples.values()):
            if len(by_index) != n:
                raise RuntimeError(
                    f"vLLM returned {len(by_index)} of {n} samples for prompt {offset + i}"
                )
            for sample in sorted(by_index.values(), key=lambda s: s.index):
                completions.append(sample.completion(offset + i, self._strip))
        return completions

    def _stepper(self) -> _Stepper:
        return _Stepper(self._llm.llm_engine, self._order, lambda: self._version)

    def _generate_with_tools(
        self,
        prompts: list[list[int]],
        sampling: SamplingConfig,
        ignore_eos: bool,
        offset: int,
    ) -> list[Completion]:
        """Multi-turn completions (:mod:`rlvr.rollout.tool_loop`): the first turns in one
        batch, then each sequence continues as soon as its own call returns (a request on
        the engine's scheduler, :class:`VllmSteps`), so one slow tool holds back only its
        sequence; the prefix cache keeps each sequence's earlier turns, so a continuation
        only prefills the tool output."""
        if self._tool_loop is None:
            from rlvr.rollout.tool_loop import ToolLoop
            from rlvr.tools.runner import ToolRunner

            assert self.config.tools is not None
            tokenizer = self._llm.get_tokenizer()
            self._tool_loop = ToolLoop(
                ToolRunner(self.config.tools),
                # control tokens written out in a tool's output stay out of the context
                encode=lambda text: list(
                    tokenizer.encode(strip_tokens(text, self._strip), add_special_tokens=False)
                ),
                decode=lambda ids: strip_tokens(
                    tokenizer.decode(ids, skip_special_tokens=False), self._strip
                ),
                eos_ids=[tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [],
            )
        loop = self._tool_loop
        turn = replace(sampling, stop=[*sampling.stop, loop.protocol.stop])
        first = self._sample(prompts, turn, ignore_eos, offset)  # offset: the prompts' seeds
        for c in first:
            c.prompt_index -= offset
        steps = VllmSteps(
            self._llm.llm_engine,
            turn,
            ignore_eos,
            self._strip,
            self._version,
            offset * turn.n,
            stepper=self._stepper() if self._order.mid_sequence else None,
        )
        out = loop.run_streaming(prompts, first, steps, sampling.max_new_tokens)
        for c in out:
            c.prompt_index += offset
        return out

    def load_weights(
        self, state: Mapping[str, torch.Tensor], version: int, after_calls: int | None = None
    ) -> None:
        """Load a state dict (HF names, tensors on any device).

        ``after_calls`` (here and in the receivers below): the ``generate`` calls the driver
        had made to this engine before the push; a load that arrives sooner waits for them
        to end (:class:`~rlvr.rollout._common.LoadOrder`)."""
        device = self._device()
        self._load([(n, t.to(device)) for n, t in state.items()], version, after_calls)

    def weights_version(self) -> int:
        return self._version

    # weight_sync receivers ----------------------------------------------------------------
    def load_packed(
        self, payload: Mapping[str, Any], version: int, after_calls: int | None = None
    ) -> None:
        """Object-store path: ``payload = {"layout": WeightLayout dict, "data": uint8 array}``
        (Ray resolves the ObjectRef argument; the array is a zero-copy view of the store)."""
        device = self._device()
        self._load([(n, t.to(device)) for n, t in unpack_payload(payload)], version, after_calls)

    def load_ipc(
        self,
        handles: Mapping[str, tuple],
        layout: Mapping[str, Any],
        version: int,
        after_calls: int | None = None,
    ) -> None:
        """CUDA IPC path: open the sender's GPU buffer (``handles``: GPU UUID → the args of
        ``torch.multiprocessing.reductions.rebuild_cuda_tensor``) and load from it."""
        from torch.multiprocessing.reductions import rebuild_cuda_tensor

        gpu = current_gpu_uuid()
        if gpu is None or gpu not in handles:
            raise ValueError(
                f"this engine's GPU {gpu} is not among the IPC handles' GPUs {list(handles)}: "
                "CUDA IPC needs the sender on the same GPU (use method='nccl' or 'object_store')"
            )
        args = list(handles[gpu])
        args[6] = torch.cuda.current_device()  # the device index as this process sees it
        buffer = rebuild_cuda_tensor(*args)
        # The sender frees its buffer when this returns: copy it if the load may land
        # later. Mid-sequence always: whether a call is running is only known under the
        # LoadOrder's lock, and one may start between a check here and the load.
        if self._order.mid_sequence or self._order.holds(after_calls):
            buffer = buffer.clone()
        self._load(unpack_weights(buffer, WeightLayout.from_dict(layout)), version, after_calls)
        del buffer

    def init_weight_group(self, host: str, port: int, rank: int, world_size: int) -> None:
        """Join the sender's NCCL group (rank 0 = the sender; it waits for every rank, so
        with mid-sequence loads this too runs beside a rollout)."""
        from vllm.distributed.weight_transfer.nccl_common import stateless_init_process_group

        self._group = stateless_init_process_group(
            host, port, rank, world_size, torch.cuda.current_device()
        )

    def load_broadcast(
        self, layout: Mapping[str, Any], version: int, after_calls: int | None = None
    ) -> None:
        """NCCL path: receive the packed buffer from rank 0 and load it."""
        if self._group is None:
            raise RuntimeError("init_weight_group must be called before load_broadcast")
        lay = WeightLayout.from_dict(layout)
        buffer = torch.empty(lay.nbytes, dtype=torch.uint8, device=self._device())
        # (Mid-sequence this runs on the weights thread beside a rollout: the sender
        # broadcasts at once, so it ends without waiting on the rollout; the load then
        # lands at the rollout's next step.)
        self._group.broadcast(buffer, src=0, stream=torch.cuda.current_stream())
        self._load(unpack_weights(buffer, lay), version, after_calls)  # (the buffer is ours)

    # introspection ------------------------------------------------------------------------
    def gpu_uuid(self) -> str | None:
        return current_gpu_uuid()

    def info(self) -> dict[str, Any]:
        """What the driver needs to validate requests and report: limits, start time."""
        mc = self._llm.model_config
        return {
            "max_model_len": int(mc.max_model_len),
            "vocab_size": int(mc.get_vocab_size()),
            "start_s": self.start_s,
            "gpu": current_gpu_uuid(),
        }

    def param_sum(self, name: str) -> float:
        """Sum of a vLLM parameter (e.g. ``model.norm.weight``): a cheap check that a sync landed."""
        return self._llm.collective_rpc(_param_sum_on_worker, args=(name,))[0]

    # internals ------------------------------------------------------------------------------
    def _device(self) -> torch.device:
        return (
            torch.device("cuda", torch.cuda.current_device())
            if torch.cuda.is_available()
            else torch.device("cpu")
        )

    def _load(
        self, weights: list[tuple[str, torch.Tensor]], version: int, after_calls: int | None
    ) -> None:
        """Apply ``weights`` now or when the :class:`LoadOrder` lands them: between calls,
        or (mid-sequence) between two steps of a running call, on the stepping thread."""
        if torch.cuda.is_available():
            # ``weights`` were made on this thread's stream (a copy to the GPU, a clone of
            # the sender's IPC buffer, an NCCL receive): finish them before returning (the
            # sender reuses its buffer) and before another thread's stream reads them.
            torch.cuda.current_stream().synchronize()

        def apply() -> None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()  # a batch still in flight reads the old weights
            self._llm.collective_rpc(_load_on_worker, args=(weights,))
            if torch.cuda.is_available():
                torch.cuda.synchronize()  # the sender may free or overwrite its buffer after this
            if self._stepping:  # requests hold KV blocks: reset when the call's have ended
                self._prefix_stale = True
            else:
                self._reset_prefix_cache()
            self._version = int(version)

        self._order.load(after_calls, apply)

    def _reset_prefix_cache(self) -> None:
        """Drop the cached KV blocks (computed by the old weights)."""
        if not self._llm.reset_prefix_cache():
            raise RuntimeError("vLLM refused to reset its prefix cache after a weight update")


# -- the driver side ---------------------------------------------------------------------------
class VllmRollout:
    """``replicas`` vLLM engine actors behind the :class:`~rlvr.rollout.base.RolloutEngine` API.

    Args:
        config: how to build each engine.
        replicas: engine actors; prompts are spread across them.
        num_gpus: GPUs per replica (a fraction to share a GPU with the learner; 0 only for
            tests with a stand-in ``vllm`` module).
        num_cpus: CPUs per replica (vLLM's scheduler and detokenizer run on the CPU).
        runtime_env: extra Ray runtime env for the actors (``env_vars`` are merged).
        start_timeout_s: bound on the engines' start (vLLM compiles for ~40 s).
        call_timeout_s: bound on each generate / load call.
        actor_options: Ray options of replica ``i`` (the placement plan's bundle,
            :func:`rlvr.plan.reserve.engine_options`); no placement group of its own then.
    """

    def __init__(
        self,
        config: VllmEngineConfig,
        replicas: int = 1,
        num_gpus: float = 1.0,
        num_cpus: float = 1.0,
        runtime_env: dict[str, Any] | None = None,
        start_timeout_s: float = 900.0,
        call_timeout_s: float = 3600.0,
        actor_options: Callable[[int], dict[str, Any]] | None = None,
    ) -> None:
        import ray
        from ray.util.placement_group import placement_group, remove_placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        if replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {replicas}")
        if num_gpus < 0 or num_cpus < 0:
            raise ValueError("num_gpus and num_cpus must be >= 0")
        if not ray.is_initialized():
            raise RuntimeError("VllmRollout needs a Ray cluster: call ray.init() first")
        self.config = config
        self.replicas = ReplicaGroup("vLLM", call_timeout_s)
        self._remove_pg = remove_placement_group
        self._pg: Any = None  # the placement group this rollout made (and removes)
        env = dict(runtime_env or {})
        env["env_vars"] = {**ENGINE_ENV, **env.get("env_vars", {})}

        if num_gpus > 0 and actor_options is None:  # else the plan's groups place them
            bundle = {"GPU": num_gpus, **({"CPU": num_cpus} if num_cpus else {})}
            self._pg = placement_group([bundle] * replicas, strategy="PACK")
            try:
                ray.get(self._pg.ready(), timeout=start_timeout_s)
            except ray.exceptions.GetTimeoutError as e:
                self.shutdown()
                raise RuntimeError(
                    f"the cluster cannot host {replicas} rollout replica(s) of {num_gpus} GPU "
                    f"and {num_cpus} CPU each (resources: {ray.cluster_resources()}); lower "
                    "rollout.replicas or the GPU share"
                ) from e

        actor = (
            actor_with_loads_beside(VllmEngine, _PUSH_METHODS)
            if config.mid_sequence_loads
            else ray.remote(VllmEngine)
        )

        def new_actor(i: int) -> Any:
            options: dict[str, Any] = {
                "num_gpus": num_gpus,
                "num_cpus": num_cpus,
                "runtime_env": env,
            }
            if self._pg is not None:
                options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                    placement_group=self._pg, placement_group_bundle_index=i
                )
            options.update(actor_options(i) if actor_options else {})
            return actor.options(**options).remote(config)

        # Several engines profiling memory on one GPU at once would see each other's
        # allocations; start them one after another unless the KV cache size is fixed.
        one_by_one = num_gpus < 1 and replicas > 1 and config.kv_cache_memory_bytes is None
        try:
            self.infos = self.replicas.start(new_actor, replicas, start_timeout_s, one_by_one)
        except BaseException:
            self.shutdown()
            raise
        self.max_model_len = min(i["max_model_len"] for i in self.infos)

    def generate(
        self, prompt_token_ids: list[list[int]], sampling: SamplingConfig
    ) -> list[Completion]:
        """``sampling.n`` completions per prompt, ordered by prompt (RolloutEngine)."""
        return self.submit(prompt_token_ids, sampling).result()

    def submit(self, prompt_token_ids: list[list[int]], sampling: SamplingConfig) -> PendingRollout:
        """:meth:`generate` started on the engines, not waited for (a ``PendingRollout``)."""
        validate_request(prompt_token_ids, sampling)
        for i, ids in enumerate(prompt_token_ids):
            if len(ids) >= self.max_model_len:
                raise ValueError(
                    f"prompt {i} has {len(ids)} tokens but the engine's max_model_len is "
                    f"{self.max_model_len}: shorten data.max_prompt_tokens or raise max_model_len"
                )
        return self.replicas.submit(prompt_token_ids, sampling)

    def load_weights(self, state: Mapping[str, torch.Tensor], version: int) -> None:
        """Replace every replica's weights through the object store (RolloutEngine).

        One ``ray.put`` of one packed buffer; every replica reads the same object.
        """
        buffer, layout = pack_weights(state, device="cpu")
        payload = {"layout": layout.to_dict(), "data": buffer.numpy()}
        self.replicas.put_to_all("load_packed", payload, version)

    def weights_version(self) -> int:
        """The version every replica has loaded (the lowest, should they ever differ)."""
        return self.replicas.weights_version()

    def shutdown(self) -> None:
        """Kill the engine actors and release their placement group."""
        self.replicas.shutdown()
        if self._pg is not None:
            self._remove_pg(self._pg)
            self._pg = None
