"""The plan in the REST service: read the cluster through the Jobs API, refuse what cannot
fit (422 naming the field), keep the plan with the job (``plan.json`` in its run dir).

    plan = plan_for_service(spec, runner)  # against the runner's cluster, when it can say
    errors = plan_errors(plan)             # FastAPI-style, loc ["body", ...]; [] if unknown
    write_plan(run_dir, plan); read_plan(run_dir)

GPU memory per GPU comes from the node's accelerator type, else ``RLVR_GPU_MEMORY_GB``,
else 80 GB. Kept apart from the routes so that the runner's admission queue can use the
same plan (:attr:`Plan.gpu_count`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from rlvr.plan.placement import Cluster, Plan, cluster_from_status, make_plan

log = logging.getLogger("rlvr.plan")

PLAN_FILE = "plan.json"  # in the job's run dir
GPU_MEMORY_ENV = "RLVR_GPU_MEMORY_GB"


def _gpu_memory_gb() -> float | None:
    raw = os.environ.get(GPU_MEMORY_ENV)
    try:
        return float(raw) if raw else None
    except ValueError:
        log.warning("%s=%r is not a number; ignored", GPU_MEMORY_ENV, raw)
        return None


CLUSTER_TTL_S = 5.0  # submissions within this long share one read of the cluster
_cached: tuple[float, int, Cluster | None] = (0.0, 0, None)


def service_cluster(runner: Any) -> Cluster | None:
    """The cluster behind the service's job runner (``/api/cluster_status`` of its Jobs API),
    or None when it cannot be read now (not connected yet, unreachable, nodes not reported).
    Never starts the local head: that is the runner's work, on its own thread."""
    global _cached
    if not runner.state().connected:
        return None
    at, owner, cluster = _cached
    if owner == id(runner) and cluster is not None and time.monotonic() - at < CLUSTER_TTL_S:
        return cluster
    try:
        response = runner.client()._do_request("GET", "/api/cluster_status")
        if response.status_code != 200:
            return None
        cluster = cluster_from_status(response.json(), _gpu_memory_gb())
    except Exception as exc:  # the plan is advice when the cluster is away, never a 500
        log.info("cluster resources unavailable: %s", exc)
        return None
    _cached = (time.monotonic(), id(runner), cluster)
    return cluster


def plan_for_service(spec: Any, runner: Any) -> Plan:
    """The plan of ``spec`` on the runner's cluster; on an unknown cluster (source
    ``unknown``, no nodes) the layout is a guess and nothing is refused."""
    cluster = service_cluster(runner)
    if cluster is None:
        plan = make_plan(spec, Cluster(nodes=(), source="unknown"))
        plan.notes.append("the cluster's resources could not be read now: layout unchecked")
        return plan
    return make_plan(spec, cluster)


def plan_errors(plan: Plan) -> list[dict[str, Any]]:
    """The plan's problems as a 422's ``detail`` (``loc`` starts with ``body``); none when
    the cluster was unknown."""
    if plan.cluster["source"] == "unknown":
        return []
    return [
        {"loc": ["body", *p["loc"]], "msg": p["msg"], "type": "value_error"} for p in plan.problems
    ]


def write_plan(run_dir: str | Path, plan: Plan) -> None:
    """``plan.json`` in the run dir; a run dir the service cannot write only loses the plan."""
    try:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        (Path(run_dir) / PLAN_FILE).write_text(plan.to_json())
    except OSError as exc:
        log.warning("could not write %s into %s: %s", PLAN_FILE, run_dir, exc)


def read_plan(run_dir: str | Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(run_dir) / PLAN_FILE).read_text())
    except (OSError, ValueError):
        return None
