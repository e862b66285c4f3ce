"""The training loop, top to bottom (docs/design.md, "One training step").

    for step in start+1 .. max_steps:
        1. take prompts_per_step prompts; the rollout engines sample group_size completions
           of each (token ids, text, per-token rollout logprobs);
        2. the reward pool scores every completion with the job's verifiers;
        3. advantages per group; optionally drop groups whose rewards are all equal;
        4. the learner recomputes logprobs, applies the policy loss, steps the optimizer;
        5. the learner sends the new weights to the rollout engines itself (CUDA IPC, NCCL
           or the object store, as the placement plan says);
        6. metrics and a few samples are written; every eval.every steps a greedy eval
           (in a synchronous run, on the engines while the next step learns, where they
           work beside the learner),
           every checkpoint.every steps a checkpoint.

With ``algorithm.max_staleness = k > 0`` step 1 is the same, started ``k`` steps early
(:mod:`rlvr.train.pipeline`): the engines sample step ``s + k`` on the weights of step
``s - 1`` while the learner learns step ``s``, and completions are scored as each replica
returns them; the loss corrects for the older policy with the rollout logprobs (ratio and
``tis_cap``), exactly as it does for engine/learner mismatch.

Everything the run produces goes to a :class:`~rlvr.train.sink.MetricSink`: the run
directory always (:class:`~rlvr.train.rundir.RunDirSink`), plus the caller's sink (the
service's job store). Reproducibility: the prompt order of step s and the sampling seed of
step s are functions of (seed, s) alone, so a resumed run samples exactly what an
uninterrupted one would have.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlvr.config import JobSpec, SpecError
from rlvr.data.records import PromptRecord
from rlvr.rollout._common import running_ray
from rlvr.rollout.base import Completion, SamplingConfig
from rlvr.rollout.weight_sync import SYNC_METHOD_CODES
from rlvr.train.algorithms import groups_with_signal, overlong_penalty, sequence_signal
from rlvr.train.batch import make_train_batch
from rlvr.train.checkpoint import (
    latest_checkpoint,
    load_trainer_state,
    restore_rng,
    save_checkpoint,
)
from rlvr.train.curriculum import Curriculum
from rlvr.train.evaluate import eval_metrics, eval_requests, eval_sets, score_completions
from rlvr.train.pipeline import RolloutQueue
from rlvr.train.reward import Reward, RewardPool
from rlvr.train.rundir import METRICS_FILE, RunDirSink
from rlvr.train.sink import FanoutSink, MetricSink, SampleRow
from rlvr.train.trackers import tracker_sinks
from rlvr.train.update import LEARNER_METRICS

log = logging.getLogger("rlvr.train")

SAMPLES_PER_STEP = 4  # completions written to samples.jsonl per step (one per group)
SPEC_FILE = "spec.json"
CURVES_FILE = "curves.png"


@dataclass
class RunSummary:
    """What a finished (or stopped) run reports."""

    status: str  # succeeded | cancelled
    step: int  # last completed step
    max_steps: int
    run_dir: str
    initial_eval_accuracy: float | None = None
    final_eval_accuracy: float | None = None
    last_metrics: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    checkpoint: str | None = None


# -- data --------------------------------------------------------------------------------------
def _resolve_model(path: str) -> Path:
    from rlvr.models import resolve_model

    try:
        return Path(resolve_model(path))
    except LookupError as exc:  # ModelNotFoundError: say which field
        raise SpecError(f"model.path: {exc}") from exc


@dataclass
class _Prompts:
    records: list[PromptRecord]
    token_ids: list[list[int]]


def _load_prompts(
    source: str, tokenizer: Any, template: str, max_tokens: int, field_name: str
) -> _Prompts:
    from rlvr.data import load_prompts, render_prompt

    records = load_prompts(source)
    kept, ids = [], []
    for r in records:
        tokens = tokenizer(render_prompt(tokenizer, r, template), add_special_tokens=False)[
            "input_ids"
        ]
        if len(tokens) <= max_tokens:
            kept.append(r)
            ids.append(list(tokens))
    if not kept:
        raise SpecError(
            f"{field_name}: every prompt of {source!r} is longer than data.max_prompt_tokens="
            f"{max_tokens} tokens; raise data.max_prompt_tokens"
        )
    if len(kept) < len(records):
        log.warning(
            "%s: skipped %d prompts longer than %d tokens",
            field_name,
            len(records) - len(kept),
            max_tokens,
        )
    return _Prompts(kept, ids)


def _prompt_indices(step: int, size: int, n: int, seed: int, shuffle: bool) -> list[int]:
    """The prompts of ``step`` (1-based): positions (step-1)*size … step*size-1 of an endless
    stream of epochs, each epoch a permutation seeded by (seed, epoch)."""
    out = []
    for pos in range((step - 1) * size, step * size):
        epoch, offset = divmod(pos, n)
        order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
        out.append(int(order[offset]))
    return out


def _refill_indices(step: int, rnd: int, size: int, n: int, seed: int) -> list[int]:
    """The prompts of refill round ``rnd`` (>= 1) of ``step``: drawn without replacement
    (as far as ``n`` allows) by a generator seeded with (seed, step, rnd), so a resumed run
    refills exactly as an uninterrupted one."""
    rng = np.random.default_rng([seed, step, rnd])
    return [int(i) for i in rng.choice(n, size=size, replace=size > n)]


def _sampling_seed(seed: int, step: int, rnd: int) -> int:
    """The engines' sampling seed of (step, refill round); round 0 is the step's own seed."""
    return (seed * 1_000_003 + step + rnd * 7_919) % 2**31


# -- metrics -----------------------------------------------------------------------------------
def _think_marker_ids(tokenizer: Any) -> tuple[int | None, int | None]:
    """The ids of ``<think>`` and ``</think>`` where ``tokenizer`` has each as one token."""

    def one_token(mark: str) -> int | None:
        ids = tokenizer.encode(mark, add_special_tokens=False)
        return ids[0] if len(ids) == 1 else None

    return one_token("<think>"), one_token("</think>")


def _think_tokens(c: Completion, marks: tuple[int | None, int | None]) -> int | None:
    """How many of ``c``'s sampled tokens its think block holds, read off its token ids: the
    tokens after the first ``<think>`` (or from the start: a template's prefill opened it)
    and before the last ``</think>``, as :func:`verifiers.split_think` cuts the text. None
    where the ids cannot say: a marker that is no single token, one the model spelled in
    pieces (the text and the ids then disagree on how many there are), or tool turns."""
    open_id, close_id = marks
    if open_id is None or close_id is None or c.model_mask is not None:
        return None
    ids = c.token_ids
    closes = ids.count(close_id)
    if closes == 0 or closes != c.text.count("</think>"):
        return None
    if ids.count(open_id) != c.text.count("<think>"):
        return None
    end = len(ids) - 1 - ids[::-1].index(close_id)
    start = ids.index(open_id) + 1 if open_id in ids[:end] else 0
    return end - start


def _think_stats(
    completions: list[Completion], tokenizer: Any, marks: tuple[int | None, int | None]
) -> tuple[float, float]:
    """(mean think-block length in tokens, fraction with a think block and an answer after
    it). Lengths come from the sampled token ids (``marks``: :func:`_think_marker_ids`); a
    completion whose ids cannot say has its think text tokenized instead: a tokenizer call
    for every think block of every step is milliseconds on the learner's thread here, and
    more with long reasoning."""
    from verifiers import split_think

    lengths: list[int] = []
    unread: list[str] = []
    ok = with_think = 0
    for c in completions:
        think, answer = split_think(c.text)
        if think is None:
            continue
        with_think += 1
        ok += bool(answer.strip())
        n = _think_tokens(c, marks)
        if n is None:
            unread.append(think)
        else:
            lengths.append(n)
    if unread:  # one tokenizer call for all of them
        lengths += [len(x) for x in tokenizer(unread, add_special_tokens=False)["input_ids"]]
    if not with_think:
        return 0.0, 0.0
    return float(np.mean(lengths)), ok / len(completions)


def _rollout_metrics(
    completions: list[Completion],
    rewards: list[Reward],
    tokenizer: Any,
    marks: tuple[int | None, int | None],
) -> dict[str, float]:
    totals = np.array([r.total for r in rewards], dtype=np.float64)
    lengths = np.array([len(c.token_ids) for c in completions])
    m = {
        "reward/mean": float(totals.mean()),
        "reward/std": float(totals.std()),
        "accuracy": float(np.mean([r.passed for r in rewards])),
        "response/length_mean": float(lengths.mean()),
        "response/length_max": float(lengths.max()),
        "response/truncated_frac": float(
            np.mean([c.finish_reason == "length" for c in completions])
        ),
    }
    names = dict.fromkeys(name for r in rewards for name in r.scores)
    for name in names:
        m[f"reward/{name}/mean"] = float(
            np.mean([r.scores[name] for r in rewards if name in r.scores])
        )
    m["think/length_mean"], m["think/format_ok"] = _think_stats(completions, tokenizer, marks)
    return m


def _tool_metrics(completions: list[Completion]) -> dict[str, float]:
    """``tools/*`` (jobs with tools enabled; docs/tools.md): calls, failures, time, turns."""
    calls = sum(c.tool_calls for c in completions)
    return {
        "tools/calls_mean": calls / len(completions),
        "tools/error_frac": sum(c.tool_errors for c in completions) / max(calls, 1),
        "tools/time_s": float(sum(c.tool_time_s for c in completions)),
        "tools/turns_mean": float(np.mean([c.turns for c in completions])),
        "tools/forged_mean": float(np.mean([c.forged_outputs for c in completions])),
    }


def _sample_rows(
    completions: list[Completion],
    rewards: list[Reward],
    records: list[PromptRecord],
    k: int,
    split_turns: Callable[[str], list[dict[str, str]]] | None = None,
) -> list[SampleRow]:
    """The first completion of the first k groups, with rewards and every verdict; with
    tools, its ``turns`` too (model text, tool code, tool output: docs/tools.md)."""
    from verifiers import split_think

    rows: list[SampleRow] = []
    seen: set[int] = set()
    for c, r in zip(completions, rewards, strict=True):
        if c.prompt_index in seen or len(rows) >= k:
            continue
        seen.add(c.prompt_index)
        record = records[c.prompt_index]
        think, answer = split_think(c.text)
        rows.append(
            {
                "prompt": record.prompt,
                "id": getattr(record, "id", ""),
                "completion": c.text,
                "think": think,
                "answer": answer.strip(),
                "reference": record.reference,
                "reward": r.total,
                "passed": r.passed,
                "verdicts": {name: v.to_dict() for name, v in r.verdicts.items()},
            }
        )
        if split_turns is not None:
            rows[-1]["turns"] = split_turns(c.text)
    return rows


def _turn_splitter(spec: JobSpec) -> Callable[[str], list[dict[str, str]]] | None:
    if not spec.tools.enabled:
        return None
    from rlvr.tools.protocol import Markers, Protocol

    return Protocol(Markers(**spec.tools.markers.model_dump())).split_turns


# -- the loop ----------------------------------------------------------------------------------
@dataclass
class PendingEval:
    """An eval started on the engines (:meth:`_Trainer.start_eval`): its metrics when done."""

    future: Future[dict[str, float]]
    timeout_s: float  # bound on waiting for it (every call inside has its own timeout too)
    waited_s: float = 0.0  # how long the loop has stood still for it

    def wait(self) -> None:
        t0 = time.perf_counter()
        self.future.result(timeout=self.timeout_s)  # (raises the eval's error)
        self.waited_s += time.perf_counter() - t0

    def result(self) -> dict[str, float]:
        """The eval's metrics, with ``time/eval_wait_s``: the seconds the loop waited for it."""
        self.wait()
        return {**self.future.result(), "time/eval_wait_s": self.waited_s}


@dataclass
class _Row:
    """One step's metrics and samples, written once its eval (if any) is done."""

    step: int
    metrics: dict[str, float]
    samples: list[SampleRow]
    eval: PendingEval | None = None


class _Trainer:
    """The state of one run: engines, learner, reward pool, data. ``train`` drives it."""

    def __init__(
        self,
        spec: JobSpec,
        run_dir: Path,
        resume: bool,
        actor_cpus: float | None,
        rewards: RewardPool | None = None,
    ):
        from rlvr.models.causal_lm import ADAPTER_DIR
        from rlvr.rollout import create_rollout
        from rlvr.rollout.hf import load_tokenizer
        from rlvr.train.learner import Learner, LearnerConfig

        self.spec = spec
        self.run_dir = run_dir
        # with tools: how a sample's text splits into turns for the samples viewer
        self.split_turns = _turn_splitter(spec)
        a = spec.algorithm
        self.model_path = _resolve_model(spec.model.path)
        self.start_step = 0
        policy_path = self.model_path
        ckpt = latest_checkpoint(run_dir) if resume else None
        if ckpt is not None:
            self.start_step, policy_path = ckpt
        self.tokenizer = load_tokenizer(policy_path)
        self.think_marks = _think_marker_ids(self.tokenizer)
        d = spec.data
        self.train_set = _load_prompts(
            d.train, self.tokenizer, d.prompt_template, d.max_prompt_tokens, "data.train"
        )
        where = "eval.sets.{}" if spec.eval.sets else "data.eval"
        self.eval_sets = {  # name -> prompts; the first set gives eval/accuracy
            name: _load_prompts(src, self.tokenizer, d.prompt_template, d.max_prompt_tokens, w)
            for name, src in eval_sets(spec).items()
            for w in [where.format(name)]
        }
        self.eval_set = next(iter(self.eval_sets.values()), None)
        self._check_verifiers()
        self.curriculum = (
            Curriculum(len(self.train_set.records), d.curriculum) if d.curriculum else None
        )
        if self.curriculum is not None and ckpt is not None:  # resume: the same choices
            self.curriculum.load_state_dict(load_trainer_state(ckpt[1])["curriculum"])

        from rlvr.plan import cluster_from_ray, cluster_without_ray, make_plan
        from rlvr.plan.reserve import engine_options, reserve
        from rlvr.plan.service import write_plan

        # Engines, learners and their GPU shares come from the cluster's resources, never
        # from this process's devices (the driver needs no GPU): docs/gpu.md. Without Ray
        # (rlvr.train.run starts none for a plan that places no actor) this machine's CPUs.
        ray = running_ray()
        with_ray = ray is not None
        self.plan = make_plan(spec, cluster_from_ray() if with_ray else cluster_without_ray())
        if not self.plan.fits:
            problem = self.plan.problems[0]
            raise SpecError(f"{'.'.join(problem['loc'])}: {problem['msg']}")
        learners = self.plan.num_learners  # >= 1 on GPUs; on CPU the spec's (0: in-process)
        if not with_ray and self.plan.places_actors:
            raise RuntimeError(
                "this run places engine or learner actors and needs a Ray cluster: call "
                "ray.init() first, or train through rlvr.train.run (which starts one)"
            )
        write_plan(run_dir, self.plan)
        if actor_cpus is None:  # one CPU per actor where the cluster has them, else a share
            cpus = float(ray.cluster_resources().get("CPU", 1)) if ray is not None else 1.0
            actor_cpus = min(1.0, cpus / (spec.rollout.replicas + learners + 1))
        log.info(
            "model %s; layout %s: %d %s engine(s)%s, %d learner actor(s), weights by %s",
            policy_path, self.plan.mode, spec.rollout.replicas, self.plan.engine,
            " in the driver" if self.plan.engines_in_driver else "", learners, self.plan.sync,
        )  # fmt: skip
        # GPUs: one placement group per node (a bundle per GPU) and one for the learners.
        self.reservation = (
            reserve(self.plan, cpus_per_actor=actor_cpus) if self.plan.gpu_count else None
        )
        place = None
        if self.reservation is not None:
            place = functools.partial(
                engine_options, self.plan, self.reservation, num_cpus=actor_cpus
            )
        # Engines, reward workers and the learner start at once (each takes seconds: model
        # loads, fresh interpreters): the engine actors load while the learner builds here.
        # An engine in this process is built after the learner, on this thread: transformers
        # builds models under process-wide device contexts (meta tensors), and two builds at
        # once in one process collide.
        start_engines = functools.partial(
            create_rollout,
            spec,
            str(policy_path),
            num_cpus=actor_cpus,
            num_gpus=self.plan.actor("engine-0").gpu_share,
            engine=self.plan.engine,
            actor_options=place,
            in_process=self.plan.engines_in_driver,
            engine_thread=self.plan.engine_thread,
        )
        engines = None
        if not self.plan.engines_in_driver:
            starter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rlvr-engines")
            engines = starter.submit(start_engines)
            starter.shutdown(wait=False)
        try:
            self.rewards = rewards if rewards is not None else RewardPool(spec.reward)
            overrides: dict[str, Any] = {
                "num_cpus_per_learner": actor_cpus,
                "num_learners": learners,
                "num_gpus_per_learner": next(
                    x.gpu_share for x in self.plan.actors if x.role == "learner"
                ),
            }
            if spec.model.lora is not None and ckpt is not None:
                # LoRA resumes as base model + the checkpoint's adapter (its optimizer state
                # is the adapter's; the KL reference stays the base). Engines load the merged
                # checkpoint.
                overrides["lora_adapter_path"] = str(ckpt[1] / ADAPTER_DIR)
                learner_path = self.model_path
            else:
                learner_path = policy_path
            config = LearnerConfig.from_spec(
                spec, str(learner_path), ref_model_path=str(self.model_path), **overrides
            )
            if a.num_learners > a.prompts_per_step * a.group_size:
                raise SpecError(
                    f"algorithm.num_learners={a.num_learners} exceeds the batch "
                    f"({a.prompts_per_step * a.group_size} sequences); lower it"
                )
            learner_group = self.reservation.learners if self.reservation else None
            self.learner = Learner(config, placement_group=learner_group)
            self.rollout = engines.result() if engines is not None else start_engines()
            self.queue = RolloutQueue(
                self.rollout,
                self.rewards,
                max_staleness=a.max_staleness,
                base_version=self.start_step,
                timeout_s=self.rollout.replicas.call_timeout_s,
            )
        except BaseException:
            with contextlib.suppress(BaseException):  # a start that failed has nothing to stop
                (engines.result() if engines is not None else self.rollout).shutdown()
            if hasattr(self, "rewards"):
                self.rewards.close()
            if hasattr(self, "learner"):
                self.learner.shutdown()
            if self.reservation is not None:
                self.reservation.release()
            raise
        # Evals are scored (and their metrics computed) on a thread of their own. Where the
        # engines work beside the learner, the loop learns the next step (whose rollout is
        # on the engines ahead of the eval) while an eval runs (train(); docs/design.md,
        # "Evals beside the next step").
        self._evaluator = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rlvr-eval")
        self.eval_in_flight: PendingEval | None = None  # started, its metrics not yet read
        # The weights the engines and the learner hold (a step that learned nothing keeps them).
        self.policy_version = self.engine_version = self.start_step
        self.busy = {"engines": 0.0, "learner": 0.0, "since": time.perf_counter()}
        self._engines_done_at = self.busy["since"]  # when the engines last finished a rollout
        if ckpt is not None:
            self.learner.load_optimizer(ckpt[1])
            restore_rng(ckpt[1])
            # Rollouts an async run had started for the steps after the checkpoint.
            pending = load_trainer_state(ckpt[1]).get("pending_rollouts", [])
            self.queue.load_state_dict(pending, self.train_set.records)
            log.info("resumed from %s (step %d)", ckpt[1], self.start_step)
        else:
            torch.manual_seed(a.seed)
            np.random.seed(a.seed)
        self.last_checkpoint = str(ckpt[1]) if ckpt else None
        self.saved_step = self.start_step if ckpt else -1

    def _check_verifiers(self) -> None:
        from verifiers import get_verifier

        for i, v in enumerate(self.spec.reward.verifiers):
            try:
                get_verifier(v.name, **v.options)
            except Exception as exc:
                raise SpecError(f"reward.verifiers[{i}] ({v.name!r}): {exc}") from exc

    def close(self) -> None:
        closers = [self.queue.close, self._close_evals, self.rewards.close, self.rollout.shutdown]
        closers.append(self.learner.shutdown)
        if self.reservation is not None:  # after the actors in its groups are gone
            closers.append(self.reservation.release)
        for closer in closers:
            try:
                closer()
            except Exception as exc:  # closing must not hide the run's own error
                log.warning("while shutting down: %s", exc)

    def _close_evals(self) -> None:
        self._evaluator.shutdown(wait=False, cancel_futures=True)

    # one step ---------------------------------------------------------------------------------
    def _sampling(self, step: int, rnd: int) -> SamplingConfig:
        a, r = self.spec.algorithm, self.spec.rollout
        return SamplingConfig(
            n=a.group_size,
            max_new_tokens=r.max_new_tokens,
            temperature=r.temperature,
            top_p=r.top_p,
            stop=list(r.stop),
            seed=_sampling_seed(a.seed, step, rnd),
        )

    def start_rollouts(self, step: int, through: int | None = None) -> None:
        """Start the rollouts of ``step … step + max_staleness`` (or ``… through``) not
        started yet, on the weights the engines hold now (the prompts and seed of each are
        its step's own)."""
        a = self.spec.algorithm
        last = step + a.max_staleness if through is None else through
        for s in range(step, min(last, a.max_steps) + 1):
            if s in self.queue:
                continue
            if self.curriculum is not None:
                idx = self.curriculum.choose(s, a.prompts_per_step, a.seed)
            else:
                n = len(self.train_set.records)
                idx = _prompt_indices(s, a.prompts_per_step, n, a.seed, self.spec.data.shuffle)
            self.queue.start(
                s,
                idx,
                [self.train_set.token_ids[i] for i in idx],
                [self.train_set.records[i] for i in idx],
                self._sampling(s, 0),
            )

    def step(self, step: int, start_next: bool = False) -> tuple[dict[str, float], list[SampleRow]]:
        """Learn ``step``; its metrics and sample rows. ``start_next``: start the next
        steps' rollouts (:meth:`start_rollouts`) right after the weight push, so that the
        engines work while this step's metrics are computed and written."""
        a, r = self.spec.algorithm, self.spec.rollout
        t_step = time.perf_counter()
        n_prompts = len(self.train_set.records)
        rounds = 1 + (a.max_refill_rounds if a.dynamic_sampling else 0)
        records: list[PromptRecord] = []
        prompt_ids: list[list[int]] = []
        completions: list[Completion] = []
        rewards: list[Reward] = []
        rollout_s = reward_s = 0.0
        sampled: list[int] = []  # train-set index of each prompt, every round
        versions: list[int] = []  # the weights version of each completion
        for rnd in range(rounds):
            if rnd == 0:
                # 1.+2. rollout and rewards: this step's was started max_staleness steps ago
                # (now, when synchronous) and scored as each replica returned it
                self.start_rollouts(step)
                started, rollout_wait_s = self.queue.take(step)
                idx, new, scored = started.indices, started.completions, started.rewards
                rollout_s += started.engine_s
                reward_s += started.reward_s
                engines_idle_s = 0.0
                if started.finished_at:  # sampled by this run (not a checkpoint's)
                    engines_idle_s = max(0.0, started.started_at - self._engines_done_at)
                    self._engines_done_at = started.finished_at
                versions += [started.weights_version] * len(new)
            else:
                # 1. refill rounds: new prompts, now, while too few groups have signal
                idx = _refill_indices(step, rnd, a.prompts_per_step, n_prompts, a.seed)
                t0 = time.perf_counter()
                new = self.rollout.generate(
                    [self.train_set.token_ids[i] for i in idx], self._sampling(step, rnd)
                )
                rollout_s += time.perf_counter() - t0
                # 2. rewards
                t0 = time.perf_counter()
                scored = self.rewards.score(
                    [c.text for c in new],
                    [self.train_set.records[idx[c.prompt_index]] for c in new],
                )
                reward_s += time.perf_counter() - t0
                versions += [self.engine_version] * len(new)
            offset = len(records)
            new = [dataclasses.replace(c, prompt_index=c.prompt_index + offset) for c in new]
            records += [self.train_set.records[i] for i in idx]
            sampled += idx
            prompt_ids += [self.train_set.token_ids[i] for i in idx]
            rewards += scored
            completions += new
            if rnd + 1 < rounds:
                totals = torch.tensor([x.total for x in rewards])
                groups = torch.tensor([c.prompt_index for c in completions])
                signal = groups_with_signal(totals, groups)
                if len({int(g) for g in groups[signal]}) >= a.prompts_per_step:
                    break
        n_tokens = sum(len(c.token_ids) for c in completions)
        if self.curriculum is not None:  # every group's outcome, refill rounds included
            outcomes: dict[int, list[bool]] = {}
            for c, x in zip(completions, rewards, strict=True):
                outcomes.setdefault(c.prompt_index, []).append(bool(x.passed))
            for j, passed in outcomes.items():
                self.curriculum.record(step, sampled[j], passed)

        # 3. advantages (+ overlong handling, dynamic sampling)
        totals = torch.tensor([x.total for x in rewards])
        if a.overlong.mode == "penalty":
            lengths = [len(c.token_ids) for c in completions]
            totals = totals + torch.tensor(
                overlong_penalty(lengths, r.max_new_tokens, a.overlong.buffer_tokens),
                dtype=totals.dtype,
            )
        groups = torch.tensor([c.prompt_index for c in completions])
        advantages = sequence_signal(totals, groups, a.estimator, a.kl_mode)
        keep = (
            groups_with_signal(totals, groups)
            if a.dynamic_sampling
            else torch.ones(len(completions), dtype=torch.bool)
        )
        if a.dynamic_sampling and rounds > 1:  # at most prompts_per_step groups, first found
            first = sorted({int(g) for g in groups[keep]})[: a.prompts_per_step]
            keep &= torch.isin(groups, torch.tensor(first, dtype=groups.dtype))
        if a.overlong.mode == "mask":  # truncated completions out of the loss
            keep &= torch.tensor([c.finish_reason != "length" for c in completions])
        kept = [i for i in range(len(completions)) if keep[i]]

        # 4. learn (the engines may be sampling later steps meanwhile)
        staleness = float(np.mean([self.policy_version - v for v in versions]))
        t0 = time.perf_counter()
        if len(kept) >= max(1, a.num_learners):
            batch = make_train_batch(
                prompt_ids, [completions[i] for i in kept], advantages[kept], self.rollout_pad_id()
            )
            learned = self.learner.update(batch, step)
            self.policy_version = step
        else:  # every group had equal rewards: nothing to learn from this step
            learned = dict.fromkeys(LEARNER_METRICS, 0.0)
            learned["lr"] = a.lr
        learn_s = time.perf_counter() - t0

        # 5. weights to the engines, straight from the learner by the plan's method (under
        # LoRA only the adapted layers change); an engine takes them once it has finished
        # the rollouts started before, never mid-sequence
        if self.eval_in_flight is not None:
            # an eval of the weights before these, queued on the engines ahead of the push:
            # done first (so its time is counted as the eval's, not the push's)
            self.eval_in_flight.wait()
        t0 = time.perf_counter()
        synced: dict[str, Any] = {"bytes": 0.0, "method": None}
        if self.engine_version != self.policy_version:
            synced = self.learner.push_weights(
                self.rollout.replicas.engines,
                self.plan.sync,
                version=self.policy_version,
                timeout_s=self.rollout.replicas.call_timeout_s,
                # behind the rollouts already submitted, also when the push (from a learner
                # actor) reaches an engine before them (rlvr.rollout._common.LoadOrder)
                after_calls=self.rollout.replicas.calls_made(),
            )
            self.engine_version = self.policy_version
        sync_s = time.perf_counter() - t0
        if start_next:
            self.start_rollouts(step + 1)
        self.busy["engines"] += rollout_s
        self.busy["learner"] += learn_s
        wall = max(time.perf_counter() - self.busy["since"], 1e-9)

        # 6. metrics
        metrics = _rollout_metrics(completions, rewards, self.tokenizer, self.think_marks)
        if self.spec.tools.enabled:
            metrics.update(_tool_metrics(completions))
        # completions that took newer weights midway (0 unless rollout.mid_sequence_weight_updates)
        metrics["async/mid_sequence_frac"] = float(
            np.mean([c.last_weights_version is not None for c in completions])
        )
        metrics.update({k: float(learned[k]) for k in LEARNER_METRICS})
        metrics.update(
            {
                "batch/groups_kept_frac": len({completions[i].prompt_index for i in kept})
                / len(records),
                "batch/refill_rounds": float(len(records) // a.prompts_per_step - 1),
                "time/rollout_s": rollout_s,
                "time/reward_s": reward_s,
                "time/learn_s": learn_s,
                "time/sync_s": sync_s,
                "sync/bytes": float(synced["bytes"]),
                "sync/method": SYNC_METHOD_CODES.get(synced["method"], 0.0),
                "throughput/rollout_tok_s": n_tokens / max(rollout_s, 1e-9),
                "throughput/learn_tok_s": learned["learner/tokens"] / max(learn_s, 1e-9),
                "async/staleness_mean": staleness,
                "async/rollout_wait_s": rollout_wait_s,
                "async/learner_wait_s": engines_idle_s,
                "async/rollout_busy_frac": min(1.0, self.busy["engines"] / wall),
                "async/learner_busy_frac": min(1.0, self.busy["learner"] / wall),
            }
        )
        if self.curriculum is not None:
            metrics.update(self.curriculum.metrics())
        metrics["time/step_s"] = time.perf_counter() - t_step
        return metrics, _sample_rows(
            completions, rewards, records, SAMPLES_PER_STEP, self.split_turns
        )

    def rollout_pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else self.tokenizer.eos_token_id

    def start_eval(self) -> PendingEval:
        """Start an eval of the weights the engines hold now: every eval set's metrics
        (``rlvr/train/evaluate.py``; ``eval/accuracy`` is the first set's greedy pass@1).

        Its generations are submitted here, on this thread, so they reach the engines after
        everything submitted before and before the next weight push (an engine runs its calls
        in order); they are scored on the eval thread. Where the engines work beside the
        learner (``Plan.engines_work_beside_learner``) the caller learns on meanwhile;
        otherwise the generations ran during this call.
        """
        assert self.eval_set is not None
        t0 = time.perf_counter()
        requests = eval_requests(self.eval_sets, self.spec)
        pending = [
            self.rollout.submit(self.eval_sets[r.set_name].token_ids, r.sampling) for r in requests
        ]

        def finish() -> dict[str, float]:
            outputs = [
                score_completions(self.eval_sets[r.set_name], p.result(), self.rewards.score)
                for r, p in zip(requests, pending, strict=True)
            ]
            metrics, _ = eval_metrics(self.eval_sets, self.spec, requests, outputs)
            metrics["time/eval_s"] = time.perf_counter() - t0
            return metrics

        bound = len(requests) * (self.rollout.replicas.call_timeout_s + 4 * self.rewards.timeout_s)
        self.eval_in_flight = PendingEval(self._evaluator.submit(finish), bound + 60)
        return self.eval_in_flight

    def evaluate(self) -> dict[str, float]:
        """An eval of the weights the engines hold now, waited for (:meth:`start_eval`)."""
        t0 = time.perf_counter()
        metrics = self.start_eval().result()
        self.eval_in_flight = None
        metrics["time/eval_wait_s"] = time.perf_counter() - t0  # all of it: nothing overlapped
        return metrics

    def save(self, step: int) -> str:
        path = save_checkpoint(
            self.run_dir,
            step,
            write_model=self.learner.save,
            tokenizer=self.tokenizer,
            trainer_state={
                "data_position": step * self.spec.algorithm.prompts_per_step,
                "weights_version": step,
                "base_model": str(self.model_path),
                "spec_name": self.spec.name,
                **({"curriculum": self.curriculum.state_dict()} if self.curriculum else {}),
                # an async run's rollouts already started for later steps (waited for here)
                "pending_rollouts": self.queue.state_dict(),
            },
            keep=self.spec.checkpoint.keep,
        )
        self.last_checkpoint, self.saved_step = str(path), step
        return str(path)


def train(
    spec: JobSpec,
    run_dir: str | Path,
    *,
    sink: MetricSink | None = None,
    resume: bool = False,
    should_stop: Callable[[], bool] | None = None,
    progress: Callable[[int, dict[str, float]], None] | None = None,
    actor_cpus: float | None = None,
    rewards: RewardPool | None = None,
) -> RunSummary:
    """Run (or resume) a training job on the Ray cluster this process is connected to.

    See :func:`rlvr.train.run` (which also connects to / starts the cluster). ``rewards``: a
    reward pool already started for ``spec.reward`` (the trainer closes it); None: its own.
    """
    t_start = time.perf_counter()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # the run dir always; experiment trackers (spec.logging) and the caller's sink beside it
    out = FanoutSink(RunDirSink(run_dir), *tracker_sinks(spec, run_dir), sink)
    if not resume and (latest_checkpoint(run_dir) or (run_dir / METRICS_FILE).exists()):
        raise ValueError(
            f"run dir {run_dir} already holds a run: resume it (--resume) or choose another run dir"
        )
    (run_dir / SPEC_FILE).write_text(json.dumps(spec.model_dump(mode="json"), indent=1))
    should_stop = should_stop or (lambda: False)

    summary = RunSummary("running", 0, spec.algorithm.max_steps, str(run_dir))
    trainer: _Trainer | None = None
    try:
        trainer = _Trainer(spec, run_dir, resume, actor_cpus, rewards)
        step = summary.step = trainer.start_step
        summary.checkpoint = trainer.last_checkpoint
        # Forget whatever a killed attempt wrote after its last checkpoint (-1: everything).
        if resume:
            out.truncate_after(step if trainer.last_checkpoint else -1)
        out.status("running", step=step)

        def write(row: _Row) -> None:
            if row.eval is not None:
                row.metrics.update(row.eval.result())
                if trainer is not None and trainer.eval_in_flight is row.eval:
                    trainer.eval_in_flight = None
            if "eval/accuracy" in row.metrics:
                if row.step == 0:
                    summary.initial_eval_accuracy = row.metrics["eval/accuracy"]
                else:
                    summary.final_eval_accuracy = row.metrics["eval/accuracy"]
            out.metrics(row.step, row.metrics)
            if row.step > 0:
                out.samples(row.step, row.samples)
                summary.last_metrics = row.metrics
            if progress:
                progress(row.step, row.metrics)

        # An eval step's row waits here while its eval runs on the engines beside the next
        # step's learning (engine actors, or an engine on its own thread): rows are still
        # written in step order. At checkpoint steps and the last step the eval is waited
        # for, so that a checkpoint never precedes its step's row.
        held: _Row | None = None
        beside = trainer.plan.engines_work_beside_learner
        max_steps = spec.algorithm.max_steps
        if spec.eval.at_start and step == 0 and trainer.eval_set is not None:
            if beside and max_steps > 0:
                trainer.start_rollouts(1, through=1)  # the first step's rollout, then the eval
                held = _Row(0, {}, [], trainer.start_eval())
            else:
                write(_Row(0, trainer.evaluate(), []))

        status = "succeeded"
        for step in range(trainer.start_step + 1, max_steps + 1):
            if should_stop():
                status = "cancelled"
                step -= 1
                break
            last = step == max_steps
            checkpoint_due = step % spec.checkpoint.every == 0 or last
            eval_due = trainer.eval_set is not None and (step % spec.eval.every == 0 or last)
            # engines that work beside the learner get the next rollouts as soon as the
            # weights are pushed, before this step's metrics are written: not when an eval
            # or a checkpoint comes first
            early = beside and not (eval_due or checkpoint_due)
            metrics, rows = trainer.step(step, start_next=early)
            if held is not None:
                write(held)
                held = None
            summary.step = step
            if eval_due:
                if beside and not checkpoint_due:
                    # the next step's rollout before the eval (already started where
                    # asynchronous), the later ones after it
                    trainer.start_rollouts(step + 1, through=step + 1)
                    held = _Row(step, metrics, rows, trainer.start_eval())
                    continue
                metrics.update(trainer.evaluate())
            write(_Row(step, metrics, rows))
            if checkpoint_due:
                out.checkpoint(step, trainer.save(step))
        if held is not None:  # (a cancelled run: the eval of the last completed step)
            write(held)
        if status == "cancelled" and 0 < summary.step != trainer.saved_step:
            # Keep the work done so far: resume continues from here, not the last periodic checkpoint.
            out.checkpoint(summary.step, trainer.save(summary.step))
        summary.status = status
        summary.checkpoint = trainer.last_checkpoint
        out.status(status, step=summary.step)
    except BaseException as exc:
        out.status("failed", step=summary.step, error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        if trainer is not None:
            trainer.close()
        summary.wall_s = time.perf_counter() - t_start
        _plot(run_dir)
    if summary.initial_eval_accuracy is None:
        summary.initial_eval_accuracy = _first_eval(run_dir)
    return summary


def _first_eval(run_dir: Path) -> float | None:
    from rlvr.train.rundir import read_jsonl

    for rec in read_jsonl(run_dir / METRICS_FILE):
        v = rec.get("eval/accuracy")
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            return float(v)
    return None


def _plot(run_dir: Path) -> None:
    try:
        from rlvr.train.plot import plot_curves

        plot_curves(run_dir / METRICS_FILE, run_dir / CURVES_FILE)
    except Exception as exc:  # a plot must never fail a run
        log.warning("could not plot curves: %s", exc)
