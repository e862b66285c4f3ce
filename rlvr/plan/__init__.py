"""Placement plans and the memory model behind them (``rlvr plan``, docs/gpu.md).

    from rlvr.plan import cluster_from_args, make_plan
    plan = make_plan(spec, cluster_from_args(gpus=2, gpu_memory_gb=80))
    plan.mode, plan.sync, plan.fits, plan.to_dict()

Importable without torch or Ray (Ray is imported only to read a running cluster).
"""

from rlvr.plan.placement import (
    Actor,
    Cluster,
    Node,
    Plan,
    cluster_from_args,
    cluster_from_ray,
    cluster_without_ray,
    make_plan,
    model_shape,
    plan_summary,
)

__all__ = [
    "Actor",
    "Cluster",
    "Node",
    "Plan",
    "cluster_from_args",
    "cluster_from_ray",
    "cluster_without_ray",
    "make_plan",
    "model_shape",
    "plan_summary",
]
