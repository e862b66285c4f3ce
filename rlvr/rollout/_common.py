"""Engine-agnostic pieces shared by the HF and vLLM rollouts: request checks, spreading
prompts over replicas, stripping control tokens, waiting on actors with a timeout,
:class:`ReplicaGroup`, the engine actors behind one rollout, and :class:`InProcessEngine`, an
engine in the driver's own process behind the same calls (:class:`LocalRef` its results)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from typing import Any

from rlvr.rollout.base import Completion, SamplingConfig

# Special tokens kept in Completion.text: verifiers read the reasoning/answer markup.
MARKUP_TOKENS = frozenset({"<think>", "</think>", "<answer>", "</answer>"})


def validate_request(prompt_token_ids: Sequence[Sequence[int]], sampling: SamplingConfig) -> None:
    """Raise ValueError naming the bad field (before anything reaches an engine)."""
    if sampling.n < 1:
        raise ValueError(f"sampling.n must be >= 1 (completions per prompt), got {sampling.n}")
    if sampling.max_new_tokens < 1:
        raise ValueError(f"sampling.max_new_tokens must be >= 1, got {sampling.max_new_tokens}")
    if sampling.temperature < 0:
        raise ValueError(
            f"sampling.temperature must be >= 0 (0 = greedy), got {sampling.temperature}"
        )
    if not 0 < sampling.top_p <= 1:
        raise ValueError(f"sampling.top_p must be in (0, 1], got {sampling.top_p}")
    if any(not isinstance(s, str) or not s for s in sampling.stop):
        raise ValueError(f"sampling.stop must be non-empty strings, got {sampling.stop!r}")
    for i, ids in enumerate(prompt_token_ids):
        if len(ids) == 0:
            raise ValueError(
                f"prompt {i} has no tokens (an empty prompt cannot be decoded; did the "
                "tokenizer drop every character of it?)"
            )
        bad = [t for t in ids if not isinstance(t, int) or t < 0]
        if bad:
            raise ValueError(f"prompt {i} has invalid token ids {bad[:5]} (need ints >= 0)")


def split_evenly(num_items: int, num_parts: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, end)`` slices of sizes differing by at most one (empty ones kept)."""
    if num_parts < 1:
        raise ValueError(f"num_parts must be >= 1, got {num_parts}")
    q, r = divmod(num_items, num_parts)
    spans, start = [], 0
    for p in range(num_parts):
        end = start + q + (1 if p < r else 0)
        spans.append((start, end))
        start = end
    return spans


def strip_tokens(text: str, tokens: frozenset[str] | set[str]) -> str:
    """``text`` without any occurrence of ``tokens`` (control tokens such as ``<|im_end|>``)."""
    for t in sorted(tokens, key=len, reverse=True):  # longest first: no partial leftovers
        if t:
            text = text.replace(t, "")
    return text


class LocalRef:
    """A value of this process standing where an ObjectRef would: what an
    :class:`InProcessEngine` call returns (done, or a future when the engine has a thread of
    its own), and what :func:`put` gives when no Ray runs here (a run that places no actor
    starts no cluster: :func:`rlvr.train.run`)."""

    __slots__ = ("_future", "_value")

    def __init__(self, value: Any = None, future: Future | None = None) -> None:
        self._value = value
        self._future = future

    def get(self, timeout_s: float | None = None) -> Any:
        """The value; a future's result within ``timeout_s`` (else ``TimeoutError``)."""
        if self._future is None:
            return self._value
        try:
            return self._future.result(timeout=timeout_s)
        except FutureTimeout as e:
            raise TimeoutError(f"not done within {timeout_s} s") from e


def running_ray() -> Any:
    """The ``ray`` module when this process is connected to a Ray cluster, else None. Never
    imports Ray: a run without actors does not load it at all (~0.6 s of its start)."""
    ray = sys.modules.get("ray")
    return ray if ray is not None and ray.is_initialized() else None


def put(value: Any) -> Any:
    """``ray.put(value)``, or a :class:`LocalRef` when this process runs no Ray (then every
    engine is in this process and nothing needs the object store)."""
    ray = running_ray()
    return ray.put(value) if ray is not None else LocalRef(value)


def wait_all(refs: list[Any], timeout_s: float, what: str) -> list[Any]:
    """``ray.get`` of every ref, or TimeoutError naming ``what`` after ``timeout_s``."""
    if all(isinstance(r, LocalRef) for r in refs):
        deadline = time.monotonic() + timeout_s
        try:
            return [r.get(max(0.0, deadline - time.monotonic())) for r in refs]
        except TimeoutError as e:
            raise _timed_out(what, timeout_s) from e
    import ray

    try:
        return ray.get(refs, timeout=timeout_s)
    except ray.exceptions.GetTimeoutError as e:
        raise _timed_out(what, timeout_s) from e


def _timed_out(what: str, timeout_s: float) -> TimeoutError:
    return TimeoutError(
        f"{what} did not finish within {timeout_s:.0f} s (raise the timeout if the model "
        "is large, or check the engine actors' logs)"
    )


class LoadOrder:
    """Keeps an engine's weight loads behind the rollouts submitted before them.

    Ray runs an actor's calls in order per caller only. The driver submits rollouts; with
    learner actors (every GPU run) the learner pushes the weights, a second caller, so a
    push could reach an engine ahead of a rollout the driver submitted just before it, and
    that rollout would sample newer weights than the schedule says (an asynchronous run
    would then not repeat on resume). The driver counts the ``generate`` calls it has made
    to each engine (:meth:`ReplicaGroup.calls_made`) and the push carries that count; an
    engine that has started fewer calls holds the load and applies it when the last of them
    ends. An engine runs one call at a time, so no load ever lands mid-sequence.

    ``mid_sequence=True`` (``rollout.mid_sequence_weight_updates``) trades that order for
    fresher samples: the load reaches the engine on a thread of its own, beside a running
    call, and lands at that call's next decoding step (:meth:`at_step`), or at once when no
    call runs; ``after_calls`` is then ignored. Loads and call starts take one lock, so a
    load never lands inside a forward pass.

    The engine runs every ``generate`` inside :meth:`call` and passes each load to
    :meth:`load` as a closure.
    """

    def __init__(self, mid_sequence: bool = False) -> None:
        self.mid_sequence = mid_sequence
        self.calls_started = 0
        self._held: list[tuple[int, Callable[[], None]]] = []  # (after_calls, apply), in order
        self._lock = threading.Lock()
        self._running = False  # (mid-sequence) a call is running
        self._next_step: list[Callable[[], None]] = []  # (mid-sequence) loads for at_step

    @contextmanager
    def call(self) -> Iterator[None]:
        """One ``generate`` call; the loads held for it land when it ends, even on error."""
        with self._lock:
            self.calls_started += 1
            self._running = True
        try:
            yield
        finally:
            with self._lock:
                self._running = False
                self._land(self._next_step)
                while self._held and self.calls_started >= self._held[0][0]:
                    _, apply = self._held.pop(0)
                    apply()

    def at_step(self) -> int:
        """Between two decoding steps of a running call (mid-sequence only): land the loads
        that arrived since the last step. Returns how many landed."""
        if not self._next_step:  # (read without the lock: a load that misses this step
            return 0  # lands at the next)
        with self._lock:
            return self._land(self._next_step)

    def holds(self, after_calls: int | None) -> bool:
        """Whether a load that must follow ``after_calls`` calls would wait now (a load
        from the sender's own buffer must then copy it: the sender may reuse it)."""
        if self.mid_sequence:
            return self._running
        return bool(self._held) or (after_calls is not None and self.calls_started < after_calls)

    def load(self, after_calls: int | None, apply: Callable[[], None]) -> bool:
        """Apply now, or hold until ``after_calls`` calls have ended (None: now); mid-sequence,
        until the running call's next step. Returns whether it was applied now."""
        with self._lock:
            if not self.holds(after_calls):
                apply()
                return True
            if self.mid_sequence:
                self._next_step.append(apply)
            else:
                self._held.append((after_calls or 0, apply))
            return False

    @staticmethod
    def _land(loads: list[Callable[[], None]]) -> int:
        n = len(loads)
        while loads:
            loads.pop(0)()
        return n


class PendingRollout:
    """A ``generate`` in flight on the replicas: one Ray ref per replica's slice.

    ``parts()`` yields each replica's completions as soon as that replica is done (in
    finishing order: scoring starts before the slowest replica ends); ``result()`` is all
    of them in prompt order. Both are bounded by ``timeout_s`` from the first wait.
    """

    def __init__(self, refs: list[Any], timeout_s: float, what: str) -> None:
        self.refs = refs
        self.timeout_s = timeout_s
        self.what = what

    def parts(self) -> Iterator[list[Completion]]:
        deadline = time.monotonic() + self.timeout_s
        waiting = [r for r in self.refs if not isinstance(r, LocalRef)]
        for ref in self.refs:
            if isinstance(ref, LocalRef):
                try:
                    yield ref.get(max(0.0, deadline - time.monotonic()))
                except TimeoutError as e:
                    raise _timed_out(self.what, self.timeout_s) from e
        if waiting:
            import ray
        while waiting:
            done, waiting = ray.wait(
                waiting, num_returns=1, timeout=max(0.0, deadline - time.monotonic())
            )
            if not done:
                raise _timed_out(self.what, self.timeout_s)
            yield ray.get(done[0])

    def result(self) -> list[Completion]:
        parts = wait_all(self.refs, self.timeout_s, self.what)
        return [c for part in parts for c in part]


# The engine methods that load weights (the receiving ends of rlvr.rollout.weight_sync).
WEIGHT_LOAD_METHODS = frozenset({"load_weights", "load_packed"})


def actor_with_loads_beside(engine_cls: type, methods: Iterable[str]) -> Any:
    """The Ray actor class of an engine that takes weight loads mid-sequence: its
    ``methods`` (the engine's side of a push) run in a concurrency group of their own
    ("weights", one thread), beside a running ``generate`` (the default group, one thread:
    rollouts still run one at a time, in order); the engine's :class:`LoadOrder` lands each
    load at that call's next decoding step, on the generating thread."""
    import ray

    def beside(name: str) -> Callable[..., Any]:
        receive = getattr(engine_cls, name)

        # (Not functools.wraps: Ray unwraps a method to read its options, and would lose
        # the concurrency group.)
        def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            return receive(self, *args, **kwargs)

        method.__name__ = method.__qualname__ = name
        method.__doc__ = receive.__doc__
        return ray.method(concurrency_group="weights")(method)

    cls = type(f"{engine_cls.__name__}LoadsBeside", (engine_cls,), {n: beside(n) for n in methods})
    return ray.remote(concurrency_groups={"weights": 1})(cls)


class InProcessEngine:
    """An engine object in this process, driven exactly like its Ray actor.

    A CPU run with one engine whose learner is the driver (``num_learners: 0``) keeps the
    engine in the driver too (``rlvr.plan``: ``engines_in_driver``): a second interpreter
    holding torch and transformers, and the Ray cluster it needs, cost ~1.3 GB and seconds of
    start on a small machine (docs/benchmarks.md). The engine keeps the actor calling
    convention, ``handle.method.remote(*args)`` returning a :class:`LocalRef`, so
    :class:`ReplicaGroup`, :class:`PendingRollout` and the weight sender drive it unchanged.

    Synchronous (``on_thread=False``): a call runs when it is made (``submit`` returns with
    the rollout done) and an error raises at the call. ``on_thread=True`` (``Plan
    .engine_thread``): calls run on the engine's own thread, one at a time in the order made,
    as an actor's do, and return futures; torch releases the GIL inside its kernels, so
    generation (an asynchronous run's rollouts, a synchronous run's evals) overlaps the
    learner on another core. Either way ref arguments are resolved first, as Ray does for
    actors, and each call runs in :func:`torch.random.fork_rng`, so the engine's per-call
    seeding leaves the driver's torch RNG where it was (the plan keeps the engine off a
    thread when the learner draws random numbers: LoRA dropout).
    """

    def __init__(self, engine: Any, on_thread: bool = False, loads_beside: bool = False) -> None:
        self._engine = engine
        # An engine that works beside the learner: calls run on the engine's own thread,
        # one at a time in the order made (as an actor's), and return futures.
        self._thread = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="rlvr-engine")
            if on_thread
            else None
        )
        # Weight loads mid-sequence: a load runs on the caller's thread, beside the running
        # call (the engine's LoadOrder lands it at that call's next step), as an actor's
        # "weights" concurrency group does (rlvr.rollout.hf).
        self._loads_beside = loads_beside

    def __getattr__(self, name: str) -> _InProcessMethod:
        if name.startswith("_"):  # (pickle and copy probe dunders before __init__ ran)
            raise AttributeError(name)
        if self._loads_beside and name in WEIGHT_LOAD_METHODS:
            # Not in fork_rng: restoring the global RNG when the load returns would rewind
            # the draws the running rollout made meanwhile (a load draws nothing).
            return _InProcessMethod(getattr(self._engine, name), None, own_rng=False)
        return _InProcessMethod(getattr(self._engine, name), self._thread)

    def kill(self) -> None:
        """What ``ray.kill`` is to an actor: close the engine (after its running call)."""
        if self._thread is not None:
            self._thread.shutdown(wait=True, cancel_futures=True)
        close = getattr(self._engine, "close", None)
        if close is not None:
            close()


class _InProcessMethod:
    def __init__(
        self, fn: Callable[..., Any], thread: ThreadPoolExecutor | None, own_rng: bool = True
    ) -> None:
        self._fn = fn
        self._thread = thread
        self._own_rng = own_rng

    def remote(self, *args: Any, **kwargs: Any) -> LocalRef:
        if self._thread is None:
            return LocalRef(self._call(args, kwargs))
        return LocalRef(future=self._thread.submit(self._call, args, kwargs))

    def _call(self, args: tuple, kwargs: dict[str, Any]) -> Any:
        import torch

        ray = running_ray()

        def resolve(x: Any) -> Any:
            if isinstance(x, LocalRef):
                return x.get()
            return ray.get(x) if ray is not None and isinstance(x, ray.ObjectRef) else x

        args = tuple(resolve(a) for a in args)
        kwargs = {k: resolve(v) for k, v in kwargs.items()}
        if not self._own_rng:
            return self._fn(*args, **kwargs)
        with torch.random.fork_rng(devices=[]):
            return self._fn(*args, **kwargs)


def kill_engine(engine: Any) -> None:
    """Stop one engine: ``ray.kill`` an actor, close an :class:`InProcessEngine`."""
    if isinstance(engine, InProcessEngine):
        engine.kill()
        return
    import ray

    ray.kill(engine)


class ReplicaGroup:
    """The engine actors of one rollout, driven together; every call has a timeout.

    Both rollouts keep one: it starts the actors (killing those already started when one
    fails), spreads a ``generate`` call's prompts over them in contiguous slices (each engine
    numbers its completions from its slice's start), sends every replica the same object-store
    ref, reads the weights version and kills them.

    Args:
        name: the engine's name in error messages (``HF``, ``vLLM``).
        call_timeout_s: bound on each generate / weight-load call.
    """

    def __init__(self, name: str, call_timeout_s: float) -> None:
        self.name = name
        self.call_timeout_s = call_timeout_s
        self.engines: list[Any] = []  # Ray actor handles
        self._calls: list[int] = []  # generate calls made to each engine (LoadOrder)

    def start(
        self,
        new_actor: Callable[[int], Any],
        replicas: int,
        timeout_s: float,
        one_by_one: bool = False,
    ) -> list[dict[str, Any]]:
        """Start ``replicas`` actors (``new_actor(i)``) and wait for each one's ``info()``.

        ``one_by_one`` waits for each before starting the next. On any failure the actors
        started so far are killed and the error propagates.
        """
        what = f"{self.name} engine start"
        infos: list[dict[str, Any]] = []
        try:
            for i in range(replicas):
                self.engines.append(new_actor(i))
                self._calls.append(0)
                if one_by_one:
                    infos += wait_all([self.engines[-1].info.remote()], timeout_s, what)
            if not one_by_one:
                infos = wait_all([e.info.remote() for e in self.engines], timeout_s, what)
        except BaseException:
            self.shutdown()
            raise
        return infos

    def generate(
        self, prompt_token_ids: list[list[int]], sampling: SamplingConfig, **kwargs: Any
    ) -> list[Completion]:
        """Each replica's engine ``generate(slice, sampling, prompt_offset=start, **kwargs)``,
        concatenated in prompt order."""
        return self.submit(prompt_token_ids, sampling, **kwargs).result()

    def submit(
        self, prompt_token_ids: list[list[int]], sampling: SamplingConfig, **kwargs: Any
    ) -> PendingRollout:
        """:meth:`generate` started, not waited for. Weights pushed after this call never
        reach these sequences: the push names :meth:`calls_made` (:class:`LoadOrder`)."""
        spans = split_evenly(len(prompt_token_ids), len(self.engines))
        refs = []
        for i, (engine, (a, b)) in enumerate(zip(self.engines, spans, strict=True)):
            if b > a:
                refs.append(
                    engine.generate.remote(
                        prompt_token_ids[a:b], sampling, prompt_offset=a, **kwargs
                    )
                )
                self._calls[i] += 1
        return PendingRollout(refs, self.call_timeout_s, f"{self.name} generate")

    def calls_made(self) -> list[int]:
        """The ``generate`` calls made so far to each engine, in :attr:`engines` order: what a
        weight push must follow (:class:`LoadOrder`)."""
        return list(self._calls)

    def put_to_all(self, method: str, payload: Any, version: int) -> None:
        """One ``ray.put`` of ``payload``; every replica's ``method(ref, version)`` reads it."""
        ref = put(payload)
        wait_all(
            [getattr(e, method).remote(ref, version) for e in self.engines],
            self.call_timeout_s,
            f"loading weights into the {self.name} engines",
        )

    def weights_version(self) -> int:
        """The version every replica has loaded (the lowest, should they ever differ)."""
        refs = [e.weights_version.remote() for e in self.engines]
        return min(wait_all(refs, 60, f"{self.name} weights_version"))

    def shutdown(self) -> None:
        """Kill the engine actors."""
        for e in self.engines:
            kill_engine(e)
        self.engines = []
        self._calls = []
