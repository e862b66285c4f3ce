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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rlvr.config import JobSpec
    from rlvr.train.loop import RunSummary
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
            already-initialised Ray, or start a local one (stopped again at the end).
        should_stop: polled between steps; True stops the run as ``cancelled`` (after
            writing a checkpoint of the last completed step).
        progress: called with ``(step, metrics)`` after every step (the CLI's progress line).
        actor_cpus: Ray CPUs per rollout/learner actor; None = one each where the cluster
            has enough, else an equal share (0 gives light actors, as the tests do).

    Returns:
        A :class:`~rlvr.train.loop.RunSummary`. Raises on failure after reporting
        ``failed`` with the error to the sinks.
    """
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # torch and transformers' model code (~2,800 modules, seconds) import on a thread while
    # Ray starts: ray.init mostly waits for its daemons to come up.
    warm_up = threading.Thread(target=_import_model_code, name="rlvr-imports", daemon=True)
    warm_up.start()
    started = False
    if not ray.is_initialized():
        address = ray_address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(
                num_cpus=os.cpu_count() or 1,
                include_dashboard=False,
                log_to_driver=False,
                _system_config={"prestart_worker_first_driver": _wants_workers(spec)},
            )
            started = True
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
        )
    finally:
        if started:
            ray.shutdown()


def _import_model_code() -> None:
    # Errors surface where these modules are imported for real (the trainer, the engine).
    with contextlib.suppress(Exception):
        import transformers.modeling_utils  # noqa: F401  (torch, torch.distributed, ...)


def _wants_workers(spec: JobSpec) -> bool:
    """Whether a local cluster should start Ray workers ahead of the first actor (Ray does, one
    per CPU, when a driver connects). A CPU run whose engine and learner both live in the
    driver (``rlvr.plan``: ``engines_in_driver``) starts no actor at all, and each idle worker
    would cost ~80 MB and a second of CPU at start. (Planned as if the machine had no GPU: on
    one that has, a mistaken no only makes the first actor start a second later.)"""
    from rlvr.plan import cluster_from_args, make_plan

    try:
        return not make_plan(spec, cluster_from_args(0)).engines_in_driver
    except Exception:  # the trainer's own plan reports what is wrong with the spec
        return True
