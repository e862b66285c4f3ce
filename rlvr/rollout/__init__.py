"""Rollout engines: sample completions (with per-token logprobs) from the current policy.

Both engines implement :class:`rlvr.rollout.base.RolloutEngine` on the driver side and run
their models in Ray actors:

- ``hf`` (:mod:`rlvr.rollout.hf`): transformers ``generate``; CPU, or a GPU fallback;
- ``vllm`` (:mod:`rlvr.rollout.vllm`): vLLM, on GPU.

:func:`create_rollout` picks and starts one from a job spec::

    rollout = create_rollout(spec, model_dir)            # rollout.engine: auto | hf | vllm
    completions = rollout.generate(prompt_ids, SamplingConfig(n=8, max_new_tokens=64))
    rollout.load_weights(state_dict, version=step)
    rollout.shutdown()
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

from rlvr.config import JobSpec
from rlvr.rollout.base import Completion, RolloutEngine, SamplingConfig

__all__ = [
    "Completion",
    "RolloutEngine",
    "SamplingConfig",
    "create_rollout",
    "resolve_engine",
]


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def resolve_engine(engine: str) -> str:
    """``auto`` -> ``vllm`` when CUDA and vLLM are both present, else ``hf``.

    Asking for ``vllm`` where it cannot run is an error naming the field, not a fallback.
    """
    has_vllm = importlib.util.find_spec("vllm") is not None
    if engine == "auto":
        return "vllm" if _cuda_available() and has_vllm else "hf"
    if engine == "vllm" and not (_cuda_available() and has_vllm):
        raise ValueError(
            "rollout.engine: vllm needs a CUDA GPU and the vllm package "
            "(pip install 'rlvr[vllm]'); use engine: hf (or auto) on this machine"
        )
    if engine not in ("hf", "vllm"):
        raise ValueError(f"rollout.engine must be auto, hf or vllm, got {engine!r}")
    return engine


def create_rollout(
    spec: JobSpec,
    model_path: str,
    *,
    num_cpus: float = 1.0,
    num_gpus: float | None = None,
    call_timeout_s: float = 1800.0,
    engine: str | None = None,
    actor_options: Callable[[int], dict] | None = None,
    in_process: bool = False,
    engine_thread: bool = False,
) -> RolloutEngine:
    """Start ``spec.rollout.replicas`` engine actors serving ``model_path``.

    Args:
        spec: the job's :class:`rlvr.config.JobSpec`.
        model_path: the HF model directory the engines load first.
        num_cpus: Ray CPUs per replica (0: light actors, as in tests).
        num_gpus: GPUs per replica; None: for vLLM a whole GPU each when the cluster has one
            per replica beside the learner, else an equal share of 0.5 GPU (the learner keeps
            the rest); 0 for ``hf``.
        call_timeout_s: bound on every generate / weight-load call.
        engine: ``hf`` or ``vllm`` as the job's placement plan chose it from the cluster
            (``rlvr.plan``; the trainer passes it); None: :func:`resolve_engine`, which looks
            at this process's own CUDA (tools and tests without a plan).
        actor_options: Ray options of replica ``i`` from the plan's placement groups
            (:func:`rlvr.plan.reserve.engine_options`); None: placed by ``num_gpus``.
        in_process: the HF engine in this process, not an actor (the plan's
            ``engines_in_driver``: a CPU run whose learner is the driver); ``engine_thread``:
            on a thread of its own (``Plan.engine_thread``).
    """
    engine = engine or resolve_engine(spec.rollout.engine)
    replicas = spec.rollout.replicas
    if in_process and engine != "hf":
        raise ValueError(f"only the hf engine runs in the driver's process, not {engine}")
    if engine == "vllm":
        import ray

        from rlvr.rollout.vllm import VllmEngineConfig, VllmRollout

        if num_gpus is None:
            gpus = float(ray.cluster_resources().get("GPU", 0))
            num_gpus = 1.0 if gpus >= replicas + 1 else round(0.5 / replicas, 3)
        return VllmRollout(
            VllmEngineConfig.from_spec(spec, model_path),
            replicas=replicas,
            num_gpus=num_gpus,
            num_cpus=num_cpus,
            call_timeout_s=call_timeout_s,
            actor_options=actor_options,
        )
    from rlvr.rollout.hf import HFEngineConfig, HFRollout
    from rlvr.tools.runner import ToolsConfig

    tools = ToolsConfig.from_spec(spec.tools) if spec.tools.enabled else None
    config = HFEngineConfig(
        model=str(model_path),
        dtype=spec.model.dtype,
        device="cpu",
        tools=tools,
        mid_sequence_loads=spec.rollout.mid_sequence_weight_updates,
    )
    return HFRollout(
        config,
        replicas=replicas,
        num_cpus=num_cpus,
        num_gpus=num_gpus or 0.0,
        call_timeout_s=call_timeout_s,
        actor_options=actor_options,
        in_process=in_process,
        engine_thread=engine_thread,
    )
