"""A plan made real on Ray: placement groups reserved, and each engine's Ray options.

    reservation = reserve(plan, cpus_per_actor=1.0)
    opts = engine_options(plan, reservation, 0, num_cpus=1.0)  # num_gpus, num_cpus, strategy
    LearnerGroup(..., placement_group=reservation.learners)
    reservation.release()

Each GPU of the plan is one bundle ``{"GPU": 1, "CPU": cpus_per_actor x its actors}``, in
one ``STRICT_PACK`` group per node, so a tensor-parallel engine's GPUs share a node. An
engine goes into the bundle of its (first) GPU asking for its ``gpu_share`` of it; its other
GPUs are bundles of the same group for the engine's own workers. Learners (created by
RLlib's ``LearnerGroup``, which takes one placement group and fills any bundle with room):
under ``split`` a group of their own (``PACK``, a whole GPU each); under ``colocate`` the
engines' group when they are all on one node, so each takes the share beside an engine.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from rlvr.plan.placement import Plan


@dataclass
class Reservation:
    """The placement groups of one job: per node (engines, colocated learners) + learners."""

    groups: dict[int, Any] = field(default_factory=dict)
    gpus: dict[int, list[int]] = field(default_factory=dict)  # node -> its group's GPUs
    learners: Any = None  # the group the LearnerGroup fills; None: Ray places them

    def release(self) -> None:
        """Give the groups back (Ray kills the actors still in them)."""
        from ray.util.placement_group import remove_placement_group

        own = [*self.groups.values()]
        if self.learners is not None and all(self.learners is not g for g in own):
            own.append(self.learners)
        for pg in own:
            with contextlib.suppress(Exception):  # already gone with its job
                remove_placement_group(pg)


def _bundles(plan: Plan, node: int, gpus: list[int], cpus_per_actor: float) -> list[dict]:
    bundles = []
    for g in gpus:
        actors = sum(1 for a in plan.actors if a.node == node and a.gpus and a.gpus[0] == g)
        bundle = {"GPU": 1.0}
        if cpus_per_actor and actors:
            bundle["CPU"] = cpus_per_actor * actors
        bundles.append(bundle)
    return bundles


def reserve(plan: Plan, *, cpus_per_actor: float = 0.0, timeout_s: float = 120.0) -> Reservation:
    """Reserve the plan's placement groups; an error saying what is missing when the
    cluster cannot grant them within ``timeout_s`` (another job holds the GPUs)."""
    import ray
    from ray.util.placement_group import placement_group

    learners = [a for a in plan.actors if a.role == "learner" and a.gpus]
    split = plan.mode == "split"
    out = Reservation()
    for node, gpus in plan.node_gpus().items():
        if split:
            gpus = [g for g in gpus if not any(x.node == node and g in x.gpus for x in learners)]
        if gpus:
            bundles = _bundles(plan, node, gpus, cpus_per_actor)
            out.groups[node] = placement_group(bundles, strategy="STRICT_PACK")
            out.gpus[node] = gpus
    if split and learners:
        bundle = {"GPU": 1.0, **({"CPU": cpus_per_actor} if cpus_per_actor else {})}
        out.learners = placement_group([dict(bundle) for _ in learners], strategy="PACK")
    elif learners and {x.node for x in learners} == {learners[0].node}:
        out.learners = out.groups.get(learners[0].node)
    pending = [*out.groups.values(), *([out.learners] if split and out.learners else [])]
    ready, _ = ray.wait([pg.ready() for pg in pending], num_returns=len(pending),
                        timeout=timeout_s)  # fmt: skip
    if len(ready) < len(pending):
        out.release()
        raise RuntimeError(
            f"the cluster did not grant this job's {plan.gpu_count} GPU(s) ({plan.mode}) within "
            f"{timeout_s:.0f} s: another job may hold them (rlvr plan shows what it needs)"
        )
    return out


def engine_options(
    plan: Plan, reservation: Reservation, replica: int, num_cpus: float = 0.0
) -> dict[str, Any]:
    """Ray ``.options(...)`` that put engine ``replica`` where the plan says."""
    actor = plan.actor(f"engine-{replica}")
    if not actor.gpus:
        return {"num_cpus": num_cpus, "num_gpus": 0}
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    index = reservation.gpus[actor.node].index(actor.gpus[0])
    return {
        "num_cpus": num_cpus,
        "num_gpus": actor.gpu_share,
        "scheduling_strategy": PlacementGroupSchedulingStrategy(
            placement_group=reservation.groups[actor.node], placement_group_bundle_index=index
        ),
    }
