"""The CPU rollout engine: a transformers causal LM decoded by our own loop, inside Ray actors
or the driver.

Two layers, mirroring :mod:`rlvr.rollout.vllm`:

- :class:`HFEngine` is the body of one Ray actor: a ``transformers`` causal LM that samples
  ``n`` completions per prompt, decoding the batch token by token with the model's KV cache
  (temperature, top-p, stop strings), and records the logprob of every sampled token under
  the distribution it was sampled from (after temperature and top-p).
- :class:`HFRollout` is the driver-side :class:`~rlvr.rollout.base.RolloutEngine`: it starts
  ``replicas`` engine actors, spreads the prompts of a ``generate`` call across them in
  contiguous slices, and loads new weights through the object store (one ``ray.put``, the
  same ObjectRef to every replica). Every call to an actor has a timeout.

    rollout = HFRollout(HFEngineConfig(model="/path/to/hf_dir"), replicas=2)
    completions = rollout.generate(prompt_ids, SamplingConfig(n=8, max_new_tokens=64))
    rollout.load_weights(learner_state_dict, version=1)

Why our own decoding loop and not ``model.generate``: a row that has ended leaves the
batch and its KV cache at once, where ``generate`` computes every row to the longest; the
sampled token's logprob is read from the one step's log-softmax that sampled it (no
``[steps, rows, vocab]`` scores kept alive); no warper we did not ask for is added
(``generate`` adds its default ``top_k=50``); a weight load can land between two steps.

CPU threads: one engine decodes with ``num_threads`` intra-op threads (:func:`cpu_threads`:
1 on small machines). On a shared machine more threads than free cores makes every step
wait on the slowest thread (``bench/cpu_threads.py``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from rlvr.models.causal_lm import (
    cache_kwarg,
    left_padded_positions,
    precision,
    shared_prefix_length,
)
from rlvr.rollout._common import (
    MARKUP_TOKENS,
    WEIGHT_LOAD_METHODS,
    InProcessEngine,
    LoadOrder,
    PendingRollout,
    ReplicaGroup,
    actor_with_loads_beside,
    strip_tokens,
    validate_request,
)
from rlvr.rollout.base import Completion, SamplingConfig
from rlvr.rollout.weight_sync import current_gpu_uuid, unpack_payload
from rlvr.tools.runner import ToolsConfig


def load_tokenizer(path: str | Path) -> Any:
    """The tokenizer of an HF model directory (or hub id).

    transformers 5 picks the tokenizer class from the *model* type (``Qwen2Tokenizer`` for a
    Qwen2 config) and rebuilds it from vocab and merges, which drops the pre-tokenizer of a
    custom ``tokenizer.json`` (the tiny models' character tokenizer loses its spaces). When
    the directory declares a generic fast tokenizer, load ``tokenizer.json`` as it is.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    config_file = Path(path) / "tokenizer_config.json"
    if config_file.is_file() and (Path(path) / "tokenizer.json").is_file():
        declared = json.loads(config_file.read_text()).get("tokenizer_class", "")
        if declared in ("TokenizersBackend", "PreTrainedTokenizerFast"):
            return PreTrainedTokenizerFast.from_pretrained(str(path))
    return AutoTokenizer.from_pretrained(str(path))


def cpu_threads() -> int:
    """Torch intra-op threads for CPU work: ``$RLVR_TORCH_THREADS``, else 1 on small machines.

    On a small machine a second thread gains little when the machine is idle and loses much
    more next to a busy process (``bench/cpu_threads.py``, numbers in docs/benchmarks.md):
    one thread bounds the worst case; set ``RLVR_TORCH_THREADS=2`` on a dedicated machine.
    """
    env = os.environ.get("RLVR_TORCH_THREADS")
    if env:
        return max(1, int(env))
    cores = os.cpu_count() or 1
    return 1 if cores <= 4 else cores // 2


def _control_tokens(tokenizer: Any) -> frozenset[str]:
    """Special tokens to strip from completion text: all of them except the think/answer markup."""
    special = set(getattr(tokenizer, "all_special_tokens", ()))
    for added in getattr(tokenizer, "added_tokens_decoder", {}).values():
        if getattr(added, "special", False):
            special.add(str(added))
    return frozenset(special) - MARKUP_TOKENS


@dataclass
class HFEngineConfig:
    """How to build one HF engine.

    Attributes:
        model: a local HF model directory (or hub id where a hub is reachable).
        dtype: ``auto`` (bf16 on GPU, fp32 on CPU), ``float32``, ``bfloat16``.
        device: ``cpu``, ``cuda`` or ``auto`` (cuda when available).
        num_threads: torch intra-op threads for decoding (see the module docstring); 0 =
            ``$RLVR_TORCH_THREADS``, else 1 on machines with <= 4 cores.
        max_batch_rows: sequences decoded together; larger calls are split into chunks.
        tools: the job's tool use (docs/tools.md); None or nothing enabled: one turn.
        share_prefill: with ``n > 1`` samples per prompt, each prompt is prefilled once and
            its KV cache repeated for its ``n`` rows (generate would prefill every row).
        share_prefix: the tokens every prompt of a chunk starts with (a system prompt, a
            template's preamble) are prefilled once and their KV cache repeated for every
            prompt; the rest of each prompt is prefilled after them.
        mid_sequence_loads: a weight load that arrives during a call lands at its next
            decoding step (``rollout.mid_sequence_weight_updates``; :class:`LoadOrder`); the
            tokens before it keep the KV cache and logprobs of the weights that sampled them.
    """

    model: str
    dtype: str = "auto"
    device: str = "cpu"
    num_threads: int = 0  # 0: $RLVR_TORCH_THREADS, else 1 on small machines
    max_batch_rows: int = 256
    tools: ToolsConfig | None = None
    share_prefill: bool = True
    share_prefix: bool = True
    mid_sequence_loads: bool = False

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("model must name a model directory or id")
        precision(self.dtype, "cpu")  # a ValueError naming the dtypes there are
        if self.num_threads < 0 or self.max_batch_rows < 1:
            raise ValueError("num_threads must be >= 0 and max_batch_rows >= 1")


def _warp(scores: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """The scores a token is sampled from: divided by the temperature (0: greedy, unscaled),
    then top-p: the smallest set of tokens whose probability reaches ``top_p`` (the most
    likely one always stays), as vLLM and transformers' ``TopPLogitsWarper`` keep it."""
    if temperature > 0 and temperature != 1.0:
        scores = scores / temperature
    if temperature > 0 and top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=True, dim=-1)
        probs = sorted_scores.softmax(-1)
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        scores = scores.masked_fill(drop, -float("inf"))
    return scores


def _cache_can(cache: Any, method: str) -> bool:
    """Whether a model's KV cache can repeat or drop batch rows (transformers' DynamicCache
    can; a cache that cannot gets a prefill per row, and ended rows stay in the batch)."""
    return hasattr(cache, method)


def _draw(logprobs: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """One token per row, drawn from ``exp(logprobs)`` by inverting its CDF at the row's
    ``uniform`` number in [0, 1): an exact sample, and ten times cheaper on CPU than
    ``torch.multinomial`` or an exponential race, which draw a number per vocabulary entry.
    The CDF is summed in float64; a number that rounding puts past the last step of the CDF
    takes the last token with mass."""
    cdf = logprobs.double().exp().cumsum(-1)
    u = uniform.to(cdf).reshape(-1, 1) * cdf[:, -1:]
    picked = torch.searchsorted(cdf, u, right=True).squeeze(-1)
    past = picked >= cdf.shape[-1]
    if bool(past.any()):
        picked[past] = (logprobs[past] > -float("inf")).cumsum(-1).argmax(-1)
    return picked


class HFEngine:
    """One transformers model; the body of a Ray actor (``ray.remote(HFEngine)``).

    The engine side of :class:`~rlvr.rollout.base.RolloutEngine`: ``generate`` of one slice
    of prompts, ``load_weights``, ``weights_version``.
    """

    def __init__(self, config: HFEngineConfig) -> None:
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # no "Loading weights" bars in the job's log
        torch.set_num_threads(config.num_threads or cpu_threads())
        self.config = config
        device = config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        t0 = time.perf_counter()
        self.tokenizer = load_tokenizer(config.model)
        self.model = AutoModelForCausalLM.from_pretrained(
            config.model, dtype=precision(config.dtype, device).weights
        ).to(self.device)
        self.model.eval()
        self.start_s = time.perf_counter() - t0

        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            eos_ids.add(self.tokenizer.eos_token_id)
        if not eos_ids:
            raise ValueError(
                f"{config.model}: neither the model nor the tokenizer defines an EOS token"
            )
        self.eos_ids = sorted(eos_ids)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.eos_ids[0]
        self._strip = _control_tokens(self.tokenizer)
        self._version = 0
        # weight loads behind the rollouts submitted before them (or mid-sequence)
        self._order = LoadOrder(mid_sequence=config.mid_sequence_loads)
        self._tool_loop: Any = None  # a ToolLoop, built on the first call with tools

    # RolloutEngine -------------------------------------------------------------------------
    def generate(
        self,
        prompt_token_ids: list[list[int]],
        sampling: SamplingConfig,
        prompt_offset: int = 0,
        first_turns: list[str] | None = None,
    ) -> list[Completion]:
        """``sampling.n`` completions per prompt, ordered by prompt; ``prompt_index`` counts
        from ``prompt_offset`` (the slice's start when an HFRollout spreads prompts).

        With ``sampling.seed`` the call is reproducible: the RNG is seeded with
        ``seed + prompt_offset * n`` (so results depend on the replica count, not on timing).

        With tools enabled the completions are multi-turn (:mod:`rlvr.rollout.tool_loop`).
        ``first_turns`` (tools only; one text per prompt) is a hook for tests and demos: the
        first turn is that text instead of a sample, masked out like tool output since the
        model did not choose it, so a call happens even with an untrained model.
        """
        with self._order.call():  # a weight load held for this call lands when it ends
            validate_request(prompt_token_ids, sampling)
            tools = self.config.tools
            if first_turns is not None and not (tools and tools.enabled):
                raise ValueError("first_turns needs tools enabled (HFEngineConfig.tools)")
            if first_turns is not None and len(first_turns) != len(prompt_token_ids):
                raise ValueError(
                    f"{len(prompt_token_ids)} prompts but {len(first_turns)} first_turns"
                )
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed + prompt_offset * sampling.n)
            # Chunks of whole prompts, at most max_batch_rows sequences each.
            per_chunk = max(1, self.config.max_batch_rows // sampling.n)
            out: list[Completion] = []
            for start in range(0, len(prompt_token_ids), per_chunk):
                chunk = prompt_token_ids[start : start + per_chunk]
                if tools and tools.enabled:
                    forced = None if first_turns is None else first_turns[start : start + per_chunk]
                    out += self._generate_with_tools(chunk, sampling, prompt_offset + start, forced)
                else:
                    out += self._generate_chunk(chunk, sampling, prompt_offset + start)
            return out

    def load_weights(
        self, state: Mapping[str, Any], version: int, after_calls: int | None = None
    ) -> None:
        """Load a state dict (HF parameter names; torch tensors or numpy arrays).

        ``after_calls``: the ``generate`` calls the driver had made to this engine before the
        push; a load that arrives sooner waits for them to end (:class:`LoadOrder`)."""
        own = self.model.state_dict()
        unknown = [k for k in state if k not in own]
        if unknown:
            raise KeyError(f"weights for unknown parameters {unknown[:5]} (a different model?)")
        if self._order.mid_sequence:  # it may land later: the sender reuses its buffer
            state = {
                k: (v if isinstance(v, torch.Tensor) else torch.from_numpy(v)).clone()
                for k, v in state.items()
            }

        def apply() -> None:
            with torch.no_grad():
                for name, value in state.items():
                    t = value if isinstance(value, torch.Tensor) else torch.from_numpy(value)
                    own[name].copy_(t.to(own[name].dtype))
            self._version = int(version)

        self._order.load(after_calls, apply)

    def load_packed(
        self, payload: Mapping[str, Any], version: int, after_calls: int | None = None
    ) -> None:
        """The object-store path of :class:`~rlvr.rollout.weight_sync.WeightSender`:
        ``payload = {"layout", "data"}`` (Ray resolves the ObjectRef the sender passed; a
        held load keeps the payload, and so the object, until it lands)."""
        self.load_weights(dict(unpack_payload(payload)), version, after_calls)

    def gpu_uuid(self) -> str | None:
        """This engine's GPU (None on CPU): how a WeightSender chooses its path."""
        return current_gpu_uuid() if self.device.type == "cuda" else None

    def weights_version(self) -> int:
        return self._version

    def info(self) -> dict[str, Any]:
        return {"start_s": self.start_s, "device": str(self.device), "eos_ids": self.eos_ids}

    def close(self) -> None:
        """Release the tools' pool and sandbox (the engine's actor is about to end)."""
        if self._tool_loop is not None:
            self._tool_loop.runner.close()
            self._tool_loop = None

    # internals -----------------------------------------------------------------------------
    def _tools(self) -> Any:
        if self._tool_loop is None:
            from rlvr.rollout.tool_loop import ToolLoop
            from rlvr.tools.runner import ToolRunner

            assert self.config.tools is not None
            self._tool_loop = ToolLoop(
                ToolRunner(self.config.tools),
                # control tokens written out in a tool's output stay text, not <|im_end|> & co
                encode=lambda text: self.tokenizer.encode(
                    strip_tokens(text, self._strip), add_special_tokens=False
                ),
                decode=self._decode,
                eos_ids=self.eos_ids,
            )
        return self._tool_loop

    def _generate_with_tools(
        self,
        prompts: list[list[int]],
        sampling: SamplingConfig,
        offset: int,
        first_turns: list[str] | None,
    ) -> list[Completion]:
        """Multi-turn completions: turns end at a call's close marker (docs/tools.md)."""
        loop = self._tools()
        turn = replace(sampling, stop=[*sampling.stop, loop.protocol.stop])
        if first_turns is None:
            first = self._generate_chunk(prompts, turn, 0)
        else:
            first = []
            for i, text in enumerate(first_turns):
                ids = loop.encode(text)
                first += [
                    Completion(i, ids, text, [0.0] * len(ids), "stop", self._version)
                    for _ in range(sampling.n)
                ]

        def sample(contexts: list[list[int]], max_new_tokens: int) -> list[Completion]:
            return self._generate_chunk(
                contexts, replace(turn, n=1, max_new_tokens=max_new_tokens), 0
            )

        out = loop.run(
            prompts, first, sample, sampling.max_new_tokens, first_is_model=first_turns is None
        )
        for c in out:
            c.prompt_index += offset
        return out

    @torch.inference_mode()
    def _generate_chunk(
        self, prompts: list[list[int]], sampling: SamplingConfig, offset: int
    ) -> list[Completion]:
        width = max(len(p) for p in prompts)
        prefix = shared_prefix_length(prompts) if self.config.share_prefix else 0
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            # the shared prefix first, then padding, then the rest: generation continues at
            # the right edge, and every row's prefix sits in the same columns (without a
            # shared prefix this is left padding)
            row = torch.tensor(p, dtype=torch.long)
            ids[i, :prefix], mask[i, :prefix] = row[:prefix], 1
            ids[i, width - len(p) + prefix :] = row[prefix:]
            mask[i, width - len(p) + prefix :] = 1
        greedy = sampling.temperature == 0
        first_version = self._version  # (loads land only between steps while a call runs)
        landed: list[tuple[int, int]] = []  # (first token sampled after a load, its version)
        rows = 1 if greedy else sampling.n  # sequences per prompt
        tokens, logprobs = self._sample(
            ids.to(self.device), mask.to(self.device), rows, sampling, landed, prefix
        )
        if greedy and sampling.n > 1:  # greedy samples are identical: decode once, repeat
            tokens = [t for t in tokens for _ in range(sampling.n)]
            logprobs = [lp for lp in logprobs for _ in range(sampling.n)]
        completions = []
        for row, (sampled, lps) in enumerate(zip(tokens, logprobs, strict=True)):
            kept, finish = self._cut(sampled, sampling.stop)
            last = [v for at, v in landed if at < len(kept)]
            completions.append(
                Completion(
                    prompt_index=offset + row // sampling.n,
                    token_ids=kept,
                    text=self._decode(kept),
                    logprobs=lps[: len(kept)],
                    finish_reason=finish,
                    weights_version=first_version,
                    last_weights_version=last[-1] if last else None,
                )
            )
        return completions

    def _sample(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        rows: int,
        sampling: SamplingConfig,
        landed: list[tuple[int, int]],
        prefix: int = 0,
    ) -> tuple[list[list[int]], list[list[float]]]:
        """``rows`` continuations of each padded prompt (its first ``prefix`` tokens common
        to every prompt, then padding, then the rest), decoded token by token with the KV
        cache; their tokens and each token's logprob under the distribution it was drawn
        from (after temperature and top-p). Rows are prompt-major.

        A row leaves the batch, and its KV cache, as soon as it has sampled EOS or its text
        holds a stop string, so the rest do not pay for it (``generate`` computes finished
        rows to the end: the more completions' lengths differ, the more that costs; the
        demo's rollout is in docs/benchmarks.md). A token is drawn by
        :func:`_draw` from one uniform number per row and step, so a row's samples do not
        depend on when the other rows end.
        """
        key = cache_kwarg(self.model)
        pos = left_padded_positions(mask)
        cache = self._prefill(ids, mask, pos, rows, prefix)
        if rows > 1:
            ids, mask, pos = (t.repeat_interleave(rows, 0) for t in (ids, mask, pos))
        total = ids.shape[0]
        live = list(range(total))  # the batch's rows: which output row each one is
        tokens: list[list[int]] = [[] for _ in range(total)]
        logprobs: list[list[float]] = [[] for _ in range(total)]
        eos = torch.tensor(self.eos_ids, device=ids.device)
        # a stop string is looked for in the text of a row's last few tokens (every token is
        # at least one character); _cut then finds it exactly
        window = max((len(s) for s in sampling.stop), default=0) + 2
        # rows that ended but stay in the batch (a cache that cannot drop rows)
        done: set[int] = set()
        step_ids, step_pos = ids[:, -1:], pos[:, -1:]
        for step in range(sampling.max_new_tokens):
            out = self.model(
                input_ids=step_ids,
                attention_mask=mask,
                position_ids=step_pos,
                use_cache=True,
                **({} if cache is None else {key: cache}),
            )
            cache = getattr(out, key)
            logp = torch.log_softmax(
                _warp(out.logits[:, -1].float(), sampling.temperature, sampling.top_p), dim=-1
            )
            if sampling.temperature == 0:
                picked = logp.argmax(-1)
            else:  # a number for every row of the call, ended or not: a row's draws do not
                # depend on when the others end (torch's RNG, seeded per call)
                uniform = torch.rand(total, dtype=torch.float64, device=logp.device)
                picked = _draw(logp, uniform[torch.tensor(live, device=logp.device)])
            picked_lp = logp.gather(-1, picked[:, None]).squeeze(-1)
            ended = torch.isin(picked, eos).tolist()
            for i, (row, t, lp) in enumerate(
                zip(live, picked.tolist(), picked_lp.tolist(), strict=True)
            ):
                if row in done:
                    ended[i] = True
                    continue
                tokens[row].append(t)
                logprobs[row].append(lp)
                if sampling.stop and not ended[i]:
                    tail = self.tokenizer.decode(tokens[row][-window:], skip_special_tokens=False)
                    ended[i] = any(s in tail for s in sampling.stop)
            self._after_token(step + 1, landed)
            if all(ended) or step + 1 == sampling.max_new_tokens:
                break
            if any(ended) and not _cache_can(cache, "batch_select_indices"):
                done.update(row for row, e in zip(live, ended, strict=True) if e)
            elif any(ended):
                keep = [i for i, e in enumerate(ended) if not e]
                index = torch.tensor(keep, device=picked.device)
                cache.batch_select_indices(index)
                live = [live[i] for i in keep]
                picked, mask, step_pos = picked[index], mask[index], step_pos[index]
            mask = torch.cat([mask, mask.new_ones((len(live), 1))], dim=1)
            step_ids, step_pos = picked[:, None], step_pos + 1
        return tokens, logprobs

    def _after_token(self, next_token: int, landed: list[tuple[int, int]]) -> None:
        """Between two decoding steps: mid-sequence, the weight loads that arrived land here,
        and the tokens from ``next_token`` on are sampled by them."""
        if self._order.mid_sequence and self._order.at_step():
            landed.append((next_token, self._version))

    def _prefill(
        self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, rows: int, prefix: int = 0
    ) -> Any:
        """The KV cache of every prompt but its last token, repeated for its ``rows`` samples
        (decoding starts by feeding the last prompt token). Each prompt is computed once
        where the cache can be repeated (``share_prefill``); else once per row. The first
        ``prefix`` columns, the same in every prompt, are computed once for all of them
        where the cache can be repeated (``share_prefix``). None for one-token prompts."""
        if ids.shape[1] < 2:
            return None
        shared = self.config.share_prefill or rows == 1
        if not shared:
            ids, mask, pos = (t.repeat_interleave(rows, 0) for t in (ids, mask, pos))
        key = cache_kwarg(self.model)
        cache: Any = self._prefix_cache(ids, mask, pos, prefix) if prefix else None
        if cache is None:
            prefix = 0
        if prefix < ids.shape[1] - 1:  # the rest of the prompts, after the shared prefix
            out = self.model(
                input_ids=ids[:, prefix:-1],
                attention_mask=mask[:, :-1],
                position_ids=pos[:, prefix:-1],
                use_cache=True,
                logits_to_keep=1,
                **({} if cache is None else {key: cache}),
            )
            cache = getattr(out, key)
        if shared and rows > 1:
            if not _cache_can(cache, "batch_repeat_interleave") or (
                cache.get_seq_length() != ids.shape[1] - 1  # e.g. a sliding window's
            ):
                # once per row after all
                return self._prefill(
                    ids.repeat_interleave(rows, 0),
                    mask.repeat_interleave(rows, 0),
                    pos.repeat_interleave(rows, 0),
                    1,
                )
            cache.batch_repeat_interleave(rows)
        return cache

    def _prefix_cache(
        self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, prefix: int
    ) -> Any:
        """The KV cache of the first ``prefix`` columns (the same in every row), computed for
        one row and repeated for all; None where the cache cannot be repeated or does not
        hold every prefix token (a sliding window)."""
        out = self.model(
            input_ids=ids[:1, :prefix],
            attention_mask=mask[:1, :prefix],
            position_ids=pos[:1, :prefix],
            use_cache=True,
            logits_to_keep=1,
        )
        cache = getattr(out, cache_kwarg(self.model))
        if not _cache_can(cache, "batch_repeat_interleave") or cache.get_seq_length() != prefix:
            return None
        cache.batch_repeat_interleave(ids.shape[0])
        return cache

    def _decode(self, tokens: list[int]) -> str:
        text = self.tokenizer.decode(tokens, skip_special_tokens=False)
        return strip_tokens(text, self._strip)

    def _cut(self, tokens: list[int], stop: list[str]) -> tuple[list[int], str]:
        """The generated tokens up to and including EOS or the first stop string."""
        end, finish = len(tokens), "length"
        eos = set(self.eos_ids)
        for i, t in enumerate(tokens):
            if t in eos:
                end, finish = i + 1, "stop"
                break
        if stop:
            # Matched on the text with special tokens in it, as generate's StopStringCriteria
            # (and vLLM with skip_special_tokens=False) see it.
            raw = self.tokenizer.decode(tokens[:end], skip_special_tokens=False)
            hits = [raw.find(s) + len(s) for s in stop if s in raw]
            if hits:
                # The shortest prefix whose text contains the stop string (kept, as vLLM's
                # include_stop_str_in_output: the learner trains on exactly these tokens).
                need = min(hits)
                for k in range(1, end + 1):
                    if len(self.tokenizer.decode(tokens[:k], skip_special_tokens=False)) >= need:
                        return tokens[:k], "stop"
        return tokens[:end], finish


# -- the driver side -----------------------------------------------------------------------
class HFRollout:
    """``replicas`` HF engine actors behind the :class:`~rlvr.rollout.base.RolloutEngine` API.

    Args:
        config: how to build each engine.
        replicas: engine actors; the prompts of a call are spread across them.
        num_cpus: Ray CPUs reserved per replica (0 for light actors in tests).
        num_gpus: Ray GPUs per replica (the HF engine on a GPU is a fallback; vLLM is faster).
        start_timeout_s: bound on loading the model in every replica.
        call_timeout_s: bound on each generate / load call.
        actor_options: Ray options of replica ``i`` (the placement plan's bundle,
            :func:`rlvr.plan.reserve.engine_options`); they override num_cpus/num_gpus.
        in_process: run the engine in this process instead of an actor
            (:class:`~rlvr.rollout._common.InProcessEngine`; one replica, the plan's
            ``engines_in_driver``); needs no Ray cluster.
        engine_thread: that engine works on a thread of its own, beside the caller
            (``Plan.engine_thread``: rollouts or evals overlap learning in one process).
    """

    def __init__(
        self,
        config: HFEngineConfig,
        replicas: int = 1,
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        start_timeout_s: float = 600.0,
        call_timeout_s: float = 1800.0,
        actor_options: Callable[[int], dict[str, Any]] | None = None,
        in_process: bool = False,
        engine_thread: bool = False,
    ) -> None:
        if replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {replicas}")
        if in_process and replicas != 1:
            raise ValueError(f"an engine in this process is one replica, got replicas={replicas}")
        self.config = config
        self.replicas = ReplicaGroup("HF", call_timeout_s)
        if in_process:  # no Ray needed (nor imported)

            def in_driver(i: int) -> InProcessEngine:
                return InProcessEngine(
                    HFEngine(config),
                    on_thread=engine_thread,
                    loads_beside=config.mid_sequence_loads,
                )

            self.infos = self.replicas.start(in_driver, 1, start_timeout_s)
            return
        import ray

        if not ray.is_initialized():
            raise RuntimeError("HFRollout needs a Ray cluster: call ray.init() first")
        actor = (
            actor_with_loads_beside(HFEngine, WEIGHT_LOAD_METHODS)
            if config.mid_sequence_loads
            else ray.remote(HFEngine)
        )

        def new_actor(i: int) -> Any:
            options: dict[str, Any] = {"num_cpus": num_cpus, "num_gpus": num_gpus}
            options.update(actor_options(i) if actor_options else {})
            return actor.options(**options).remote(config)

        self.infos = self.replicas.start(new_actor, replicas, start_timeout_s)

    def generate(
        self, prompt_token_ids: list[list[int]], sampling: SamplingConfig
    ) -> list[Completion]:
        """``sampling.n`` completions per prompt, ordered by prompt (RolloutEngine)."""
        return self.submit(prompt_token_ids, sampling).result()

    def submit(self, prompt_token_ids: list[list[int]], sampling: SamplingConfig) -> PendingRollout:
        """:meth:`generate` started on the engines, not waited for (the async loop)."""
        validate_request(prompt_token_ids, sampling)
        return self.replicas.submit(prompt_token_ids, sampling)

    def load_weights(self, state: Mapping[str, Any], version: int) -> None:
        """Replace every replica's weights: one ``ray.put``, one ObjectRef to every replica."""
        self.replicas.put_to_all("load_weights", dict(state), version)

    def weights_version(self) -> int:
        """The version every replica has loaded (the lowest, should they ever differ)."""
        return self.replicas.weights_version()

    def shutdown(self) -> None:
        """Kill the engine actors."""
        self.replicas.shutdown()
