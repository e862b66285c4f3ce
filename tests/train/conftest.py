"""Fixtures shared by the training-loop tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def rollouts_at_eval_start(monkeypatch):
    """The steps whose rollouts were in flight when each eval started, one sorted list per
    eval: an eval beside the next step starts behind that step's rollout, one between steps
    with only the rollouts an asynchronous run had already started."""
    from rlvr.train import loop

    seen: list[list[int]] = []
    start_eval = loop._Trainer.start_eval

    def spy(self):
        seen.append(sorted(self.queue._pending))
        return start_eval(self)

    monkeypatch.setattr(loop._Trainer, "start_eval", spy)
    return seen
