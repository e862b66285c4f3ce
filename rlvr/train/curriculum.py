"""A curriculum from pass rates: which prompts a step trains on, given how the policy did
on each one so far (docs/training.md, "Curriculum").

Per prompt the record keeps attempts, passes, the last group's pass rate, runs of all-pass
and all-fail groups and the step it was last seen. The sampling weight of prompt j:

    0                               retired (retire_after_solved all-pass groups in a row)
    1                               never seen
    FAILED_WEIGHT                   every group so far failed, seen < revisit_failed_every
                                    steps ago (then 1 again: it is revisited)
    prefer=mixed: 0.5 + 4·p(1 − p)  p = the last group's pass rate (max 1.5 at p = 1/2)
    prefer=hard:  0.5 + (1 − p̄)    p̄ = the mean pass rate so far
    prefer=none:  1

and a step draws ``size`` prompts without replacement with probability ∝ weight, from a
generator seeded by (seed, step): with the record restored from a checkpoint, a resumed run
draws what an uninterrupted one would have.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rlvr.config import CurriculumSpec

FAILED_WEIGHT = 0.1


class Curriculum:
    """The per-prompt pass-rate record of ``n`` prompts and the choice it drives."""

    def __init__(self, n: int, spec: CurriculumSpec) -> None:
        self.spec = spec
        self.attempts = np.zeros(n, dtype=np.int64)
        self.passes = np.zeros(n, dtype=np.int64)
        self.last_rate = np.zeros(n, dtype=np.float64)
        self.solved_run = np.zeros(n, dtype=np.int64)
        self.failed_run = np.zeros(n, dtype=np.int64)
        self.last_seen = np.full(n, -1, dtype=np.int64)

    # -- the record -----------------------------------------------------------------------
    def record(self, step: int, prompt: int, passed: list[bool]) -> None:
        """One group's outcome: ``passed`` of each completion of prompt ``prompt``."""
        k, n = int(sum(passed)), len(passed)
        self.attempts[prompt] += n
        self.passes[prompt] += k
        self.last_rate[prompt] = k / max(n, 1)
        self.solved_run[prompt] = self.solved_run[prompt] + 1 if k == n else 0
        self.failed_run[prompt] = self.failed_run[prompt] + 1 if k == 0 else 0
        self.last_seen[prompt] = step

    @property
    def retired(self) -> np.ndarray:
        r = self.spec.retire_after_solved
        return (self.solved_run >= r) if r > 0 else np.zeros(len(self.attempts), dtype=bool)

    def weights(self, step: int) -> np.ndarray:
        """The sampling weight of every prompt at ``step`` (module docstring)."""
        seen = self.attempts > 0
        mean = np.where(seen, self.passes / np.maximum(self.attempts, 1), 0.0)
        if self.spec.prefer == "mixed":
            w = 0.5 + 4.0 * self.last_rate * (1.0 - self.last_rate)
        elif self.spec.prefer == "hard":
            w = 0.5 + (1.0 - mean)
        else:
            w = np.ones(len(mean))
        always_failed = seen & (self.passes == 0)
        resting = always_failed & (step - self.last_seen < self.spec.revisit_failed_every)
        w = np.where(always_failed, np.where(resting, FAILED_WEIGHT, 1.0), w)
        w = np.where(seen, w, 1.0)
        return np.where(self.retired, 0.0, w)

    def choose(self, step: int, size: int, seed: int) -> list[int]:
        """``size`` prompts for ``step``, without replacement while enough are active; when
        every prompt is retired, the choice falls back to all of them."""
        w = self.weights(step)
        if w.sum() <= 0:
            w = np.ones(len(w))
        rng = np.random.default_rng([seed, step, 0xC0])
        active = int((w > 0).sum())
        idx = rng.choice(len(w), size=size, replace=size > active, p=w / w.sum())
        return [int(i) for i in idx]

    # -- metrics and checkpoints ------------------------------------------------------------
    def metrics(self) -> dict[str, float]:
        """Active/retired/unseen counts and a histogram of the seen prompts' mean pass rate."""
        seen = self.attempts > 0
        mean = self.passes[seen] / self.attempts[seen]
        retired = int(self.retired.sum())
        return {
            "curriculum/active": float(len(self.attempts) - retired),
            "curriculum/retired": float(retired),
            "curriculum/unseen": float((~seen).sum()),
            "curriculum/pass_rate_eq0": float((mean == 0).sum()),
            "curriculum/pass_rate_lt50": float(((mean > 0) & (mean < 0.5)).sum()),
            "curriculum/pass_rate_ge50": float(((mean >= 0.5) & (mean < 1)).sum()),
            "curriculum/pass_rate_eq1": float((mean == 1).sum()),
        }

    FIELDS = ("attempts", "passes", "last_rate", "solved_run", "failed_run", "last_seen")

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready: goes into the checkpoint's trainer_state.json."""
        return {k: getattr(self, k).tolist() for k in self.FIELDS}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k in self.FIELDS:
            old = getattr(self, k)
            values = np.asarray(state[k], dtype=old.dtype)
            if values.shape != old.shape:
                raise ValueError(
                    f"checkpoint curriculum has {values.shape[0]} prompts, the train set "
                    f"{old.shape[0]}; data.train changed since the checkpoint"
                )
            setattr(self, k, values)
