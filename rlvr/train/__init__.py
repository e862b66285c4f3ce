"""The trainer: GRPO-family RLVR on a Ray cluster.

    from rlvr.config import JobSpec
    from rlvr.train import run

    summary = run(JobSpec.from_file("examples/arithmetic.yaml"), "runs/arith")
    summary.final_eval_accuracy

Modules: :mod:`~rlvr.train.algorithms` (advantages, policy loss), :mod:`~rlvr.train.batch`
(train batches, micro-batches), :mod:`~rlvr.train.update` (one gradient step),
:mod:`~rlvr.train.learner` (RLlib TorchLearner / LearnerGroup), :mod:`~rlvr.train.reward`
(verifier pool),
:mod:`~rlvr.train.loop` (the loop), :mod:`~rlvr.train.checkpoint`,
:mod:`~rlvr.train.rundir` (run-dir sink), :mod:`~rlvr.train.plot`, :mod:`~rlvr.train.sink`.
Importing this package is cheap; torch and Ray load when :func:`run` is called.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rlvr.config import JobSpec
    from rlvr.train.loop import RunSummary
    from rlvr.train.reward import RewardPool
    from rlvr.train.sink import MetricSink

__all__ = ["run"]

log = logging.getLogger("rlvr.train")


def run(
    spec: JobSpec,
    run_dir: str | Path,
    *,
    sink: MetricSink | None = None,
    resume: bool = False,
    ray_address: str | None = None,
    should_stop: Callable[[], bool] | None = None,
    progress: Callable[[int, dict[str, float]], None] | None = None,
    actor_cpus: float | None = None,
) -> RunSummary:
    """Train ``spec`` to ``algorithm.max_steps``, writing everything into ``run_dir``.

    Args:
        spec: the job (validated :class:`~rlvr.config.JobSpec`).
        run_dir: metrics.jsonl, samples.jsonl, checkpoints/step_N/, spec.json, curves.png.
        sink: also report there (the service's job store); the run dir is always written.
        resume: continue from the newest checkpoint in ``run_dir`` (``sink.truncate_after``
            is called first so every step's metrics are written exactly once).
        ray_address: the cluster to join; default ``$RAY_ADDRESS``; neither: use the
            already-initialised Ray, or start a local one (stopped again at the end) when
            the run places actors. A run without (a CPU run with one engine and its
            learner in this process) runs without Ray.
        should_stop: polled between steps; True stops the run as ``cancelled`` (after
            writing a checkpoint of the last completed step).
        progress: called with ``(step, metrics)`` after every step (the CLI's progress line).
        actor_cpus: Ray CPUs per rollout/learner actor; None = one each where the cluster
            has enough, else an equal share (0 gives light actors, as the tests do).

    Returns:
        A :class:`~rlvr.train.loop.RunSummary`. Raises on failure after reporting
        ``failed`` with the error to the sinks.
    """
    from rlvr.train.reward import RewardPool

    # The reward workers start first: fresh interpreters importing the verifiers (sympy),
    # on the cores this process leaves idle while it imports torch and starts Ray.
    rewards = RewardPool(spec.reward)
    try:
        return _run(spec, run_dir, rewards, sink, resume, ray_address, should_stop, progress,
                    actor_cpus)  # fmt: skip
    finally:
        rewards.close()  # (the trainer closes it too; a start that failed first has not)


def _run(
    spec: JobSpec,
    run_dir: str | Path,
    rewards: RewardPool,
    sink: MetricSink | None,
    resume: bool,
    ray_address: str | None,
    should_stop: Callable[[], bool] | None,
    progress: Callable[[int, dict[str, float]], None] | None,
    actor_cpus: float | None,
) -> RunSummary:
    from rlvr.rollout._common import running_ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # torch and transformers' model code (~2,800 modules, seconds) import on a thread while
    # Ray starts (ray.init mostly waits for its daemons) or the trainer's modules import.
    warm_up = threading.Thread(target=_import_model_code, name="rlvr-imports", daemon=True)
    warm_up.start()
    started: Any = None  # the Ray module, when this call started a cluster (stopped at the end)
    if running_ray() is None:
        address = ray_address or os.environ.get("RAY_ADDRESS")
        if address:
            import ray

            ray.init(address=address, log_to_driver=False)
        elif _places_actors(spec):
            import ray

            ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
            started = ray
        else:
            log.info("the plan places no actor (engine and learner in this process): no Ray")
    warm_up.join()
    from rlvr.train.loop import train

    try:
        return train(
            spec,
            run_dir,
            sink=sink,
            resume=resume,
            should_stop=should_stop,
            progress=progress,
            actor_cpus=actor_cpus,
            rewards=rewards,
        )
    finally:
        if started is not None:
            started.shutdown()


def _import_model_code() -> None:
    # Errors surface where these modules are imported for real (the trainer, the engine).
    with contextlib.suppress(Exception):
        import transformers.modeling_utils  # noqa: F401  (torch, torch.distributed, ...)


def _places_actors(spec: JobSpec) -> bool:
    """Whether the run, planned on this machine, places any actor (``Plan.places_actors``),
    and so needs a Ray cluster. A CPU run with one engine and its learner in the driver
    places none: Ray's start would be ~5 s and ~0.6 GB of daemons for nothing
    (docs/benchmarks.md, "Async RL"). A machine with a CUDA device always gets its cluster
    (the GPU plan places actors)."""
    import torch

    from rlvr.plan import cluster_without_ray, make_plan

    if torch.cuda.is_available():
        return True
    try:
        plan = make_plan(spec, cluster_without_ray())
    except Exception:  # the trainer's own plan reports what is wrong with the spec
        return True
    # a plan that does not fit here fails in the trainer with its problem: no Ray for that
    return plan.fits and plan.places_actors
