"""Rollouts started ahead of the learner: the asynchronous half of the loop.

With ``algorithm.max_staleness = k`` the loop starts step ``s``'s rollout at the beginning of
step ``s - k``, on the weights the engines hold then (version ``s - k - 1``), and learns step
``s - k`` while the engines sample. ``k = 0`` is the synchronous loop: start, then wait.

    queue = RolloutQueue(rollout, rewards, max_staleness=1, base_version=0)
    queue.start(step=2, ...)          # the engines begin step 2 on the weights of step 0
    batch = queue.take(step=1)        # step 1's completions, scored, with their version
    ...learn step 1, push version 1...

Why it is exact: a weight push made after ``start`` never reaches the sequences started
before it (no update lands mid-sequence): the push names the calls made to each engine
before it and an engine holds it until they end (:class:`rlvr.rollout._common.LoadOrder`;
Ray alone orders an actor's calls per caller, and a learner actor's push is another
caller's), and each step's prompts and sampling seed are functions of (seed, step). A
checkpoint at step ``c`` waits for the rollouts of ``c+1 … c+k`` and stores them
(:meth:`RolloutQueue.state_dict`); a resumed run takes those instead of sampling them again
on newer weights, so it continues exactly as an uninterrupted run would.

Scoring streams: a worker thread scores each replica's completions as soon as that replica
returns them (the verifier pool is thread-safe), so rewards overlap generation, and the
driver's own thread is free to run the learner meanwhile.
"""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from rlvr.data.records import PromptRecord
from rlvr.rollout.base import Completion, RolloutEngine, SamplingConfig
from rlvr.train.reward import Reward, RewardPool


@dataclass
class ScoredRollout:
    """One step's rollout, scored: what the learner consumes."""

    step: int
    indices: list[int]  # train-set index of each prompt
    completions: list[Completion]  # prompt_index: position in ``indices``
    rewards: list[Reward]
    weights_version: int  # the policy version the engines sampled with (the lowest, if mixed)
    engine_s: float = 0.0  # engine time of this rollout (from its start on the engines)
    reward_s: float = 0.0  # time spent scoring
    started_at: float = 0.0  # perf_counter when the engines could start it
    finished_at: float = 0.0  # perf_counter when the last replica returned


class RolloutQueue:
    """Rollouts in flight, keyed by step, scored in the background as replicas return.

    Args:
        rollout: the engines (``submit`` starts a generate without waiting).
        rewards: the job's reward pool.
        max_staleness: how many steps ahead rollouts may be started (0: synchronous).
        base_version: the run's start step: engines report 0 for the weights they were
            started with, which are this version.
        timeout_s: bound on waiting for one rollout (the engines' call timeout).
    """

    def __init__(
        self,
        rollout: RolloutEngine,
        rewards: RewardPool,
        *,
        max_staleness: int,
        base_version: int,
        timeout_s: float,
    ) -> None:
        self.rollout = rollout
        self.rewards = rewards
        self.max_staleness = max_staleness
        self.base_version = base_version
        self.timeout_s = timeout_s
        self._pending: dict[int, Future[ScoredRollout]] = {}
        self._scorer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rlvr-scorer")
        self._engines_free_at = 0.0  # when the engines finish what was started before

    def __contains__(self, step: int) -> bool:
        return step in self._pending

    def start(
        self,
        step: int,
        indices: list[int],
        prompt_ids: list[list[int]],
        records: list[PromptRecord],
        sampling: SamplingConfig,
    ) -> None:
        """Start ``step``'s rollout on the engines now; it is scored as it comes back."""
        # (before the call: an engine in the driver's process does the whole rollout in it)
        launched = time.perf_counter()
        pending = self.rollout.submit(prompt_ids, sampling)

        def collect() -> ScoredRollout:
            completions: list[Completion] = []
            rewards: dict[int, Reward] = {}
            reward_s = 0.0
            returned = launched
            for part in pending.parts():  # each replica's slice, as soon as it is done
                t0 = returned = time.perf_counter()
                scored = self.rewards.score(
                    [c.text for c in part], [records[c.prompt_index] for c in part]
                )
                reward_s += time.perf_counter() - t0
                for c, r in zip(part, scored, strict=True):
                    rewards[id(c)] = r
                completions += part
            completions.sort(key=lambda c: c.prompt_index)  # stable: samples keep their order
            # The engines run calls in order: this one began once the previous one ended.
            began = max(launched, self._engines_free_at)
            self._engines_free_at = returned
            return ScoredRollout(
                step=step,
                indices=list(indices),
                completions=completions,
                rewards=[rewards[id(c)] for c in completions],
                weights_version=self._version_of(completions),
                engine_s=max(0.0, returned - began),
                reward_s=reward_s,
                started_at=began,
                finished_at=returned,
            )

        self._pending[step] = self._scorer.submit(collect)

    def take(self, step: int) -> tuple[ScoredRollout, float]:
        """``step``'s scored rollout and the seconds this call waited for it."""
        t0 = time.perf_counter()
        future = self._pending.pop(step)
        batch = future.result(timeout=self.timeout_s + self.rewards.timeout_s * 4 + 60)
        return batch, time.perf_counter() - t0

    def state_dict(self) -> list[dict[str, Any]]:
        """The rollouts started for later steps, waited for: what a checkpoint stores."""
        out = []
        for step in sorted(self._pending):
            batch = self._pending[step].result(timeout=self.timeout_s + 60)
            out.append(
                {
                    "step": batch.step,
                    "indices": batch.indices,
                    "weights_version": batch.weights_version,
                    "completions": [dataclasses.asdict(c) for c in batch.completions],
                }
            )
        return out

    def load_state_dict(self, state: list[dict[str, Any]], records: list[PromptRecord]) -> None:
        """Rollouts a checkpoint stored (``records``: the train set), scored again now."""
        for item in state:
            completions = [Completion(**c) for c in item["completions"]]
            chosen = [records[i] for i in item["indices"]]
            t0 = time.perf_counter()
            rewards = self.rewards.score(
                [c.text for c in completions], [chosen[c.prompt_index] for c in completions]
            )
            done: Future[ScoredRollout] = Future()
            done.set_result(
                ScoredRollout(
                    step=int(item["step"]),
                    indices=[int(i) for i in item["indices"]],
                    completions=completions,
                    rewards=rewards,
                    weights_version=int(item["weights_version"]),
                    reward_s=time.perf_counter() - t0,
                )
            )
            self._pending[int(item["step"])] = done

    def close(self) -> None:
        """Stop scoring; rollouts still in flight are dropped (their engines are going)."""
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        self._scorer.shutdown(wait=False, cancel_futures=True)

    def _version_of(self, completions: list[Completion]) -> int:
        # Engines count from 0 = the weights they were started with (the run's start step).
        versions = [c.weights_version or self.base_version for c in completions]
        return min(versions) if versions else self.base_version
