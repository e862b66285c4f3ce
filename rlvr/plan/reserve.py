"""A plan made real on Ray: placement groups reserved, each actor's Ray options.

    groups = reserve(plan, cpus_per_actor=1.0)           # one STRICT_PACK group per node used
    opts = actor_options(plan, "engine-0", groups, 1.0)  # num_gpus, num_cpus, scheduling
    Engine = ray.remote(EngineClass).options(**opts).remote(...)
    release(groups)

Each GPU of the plan is one bundle ``{"GPU": 1, "CPU": cpus_per_actor x its actors}``; an
actor goes into the bundle of its (first) GPU asking for its ``gpu_share`` of it, so two
actors planned on one GPU (colocate) share that GPU and Ray gives both the same GPU id. A
tensor-parallel engine asks for its share of its first GPU; its other GPUs are bundles of
the same group (on the same node) for the engine's own workers. CPU actors get no group.
"""

from __future__ import annotations

import contextlib
from typing import Any

from rlvr.plan.placement import Plan


def reserve(plan: Plan, *, cpus_per_actor: float = 0.0, timeout_s: float = 120.0) -> dict[int, Any]:
    """Reserve the plan's placement groups (node -> group); an error naming what is missing
    when the cluster cannot give them within ``timeout_s``."""
    import ray
    from ray.util.placement_group import placement_group

    groups: dict[int, Any] = {}
    for node, gpus in plan.node_gpus().items():
        bundles = []
        for g in gpus:
            actors = sum(1 for a in plan.actors if a.node == node and a.gpus and a.gpus[0] == g)
            bundle = {"GPU": 1.0}
            if cpus_per_actor and actors:
                bundle["CPU"] = cpus_per_actor * actors
            bundles.append(bundle)
        groups[node] = placement_group(bundles, strategy="STRICT_PACK")
    ready, _ = ray.wait([pg.ready() for pg in groups.values()], num_returns=len(groups),
                        timeout=timeout_s)  # fmt: skip
    if len(ready) < len(groups):
        release(groups)
        raise RuntimeError(
            f"the cluster did not grant the plan's placement groups within {timeout_s:.0f} s "
            f"({', '.join(f'{len(g)} GPU(s) on one node' for g in plan.node_gpus().values())}); "
            "is another job holding the GPUs? (rlvr plan shows what this job needs)"
        )
    return groups


def actor_options(
    plan: Plan, name: str, groups: dict[int, Any], num_cpus: float = 0.0
) -> dict[str, Any]:
    """Ray ``.options(...)`` that put actor ``name`` where the plan says."""
    actor = plan.actor(name)
    if not actor.gpus:
        return {"num_cpus": num_cpus, "num_gpus": 0}
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    index = plan.node_gpus()[actor.node].index(actor.gpus[0])
    return {
        "num_cpus": num_cpus,
        "num_gpus": actor.gpu_share,
        "scheduling_strategy": PlacementGroupSchedulingStrategy(
            placement_group=groups[actor.node], placement_group_bundle_index=index
        ),
    }


def release(groups: dict[int, Any]) -> None:
    """Give the plan's placement groups back (actors in them are killed by Ray)."""
    from ray.util.placement_group import remove_placement_group

    for pg in groups.values():
        with contextlib.suppress(Exception):  # already gone with its job
            remove_placement_group(pg)
