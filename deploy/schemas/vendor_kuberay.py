"""Re-create ``kuberay-v<version>-crds.json`` from KubeRay's own CustomResourceDefinitions.

KubeRay's CRDs (``ray-operator/config/crd/bases/ray.io_*.yaml`` in github.com/ray-project/
kuberay, Apache-2.0) carry an OpenAPI v3 structural schema per kind. This script turns the
``ray.io/v1`` schema of each kind deploy/ uses into JSON Schema (draft 2020-12), strict
like ``kubectl apply --validate=strict``: an object that lists its properties accepts no
others unless the CRD says ``x-kubernetes-preserve-unknown-fields``. Descriptions are
dropped and every distinct subschema is stored once under ``$defs`` (a RayJob embeds a
whole RayCluster spec and pod templates repeat), so the committed file stays small.

    git clone --branch v1.7.0 https://github.com/ray-project/kuberay
    python deploy/schemas/vendor_kuberay.py --source kuberay/ray-operator/config/crd/bases \\
        --kuberay-version 1.7.0

Not carried over: the CRDs' CEL rules (``x-kubernetes-validations``), which need a CEL
evaluator; the real CRD applied by the operator stays the authority for those.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
KINDS = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}
_OBJECT_META = "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
# Keywords with the same meaning in a structural OpenAPI v3 schema and in JSON Schema.
_SAME = [
    "type",
    "enum",
    "format",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "uniqueItems",
    "required",
    "default",
]


def to_json_schema(node: dict[str, Any]) -> dict[str, Any]:
    """One OpenAPI v3 (Kubernetes structural) schema node as a strict JSON Schema node."""
    out: dict[str, Any] = {k: node[k] for k in _SAME if k in node}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in node:
        out["properties"] = {k: to_json_schema(v) for k, v in node["properties"].items()}
    if "items" in node:
        out["items"] = to_json_schema(node["items"])
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        out["additionalProperties"] = to_json_schema(extra)
    elif extra is not None:
        out["additionalProperties"] = extra
    elif "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False  # strict: a misspelt field is an error
    for key in ("allOf", "anyOf", "oneOf"):
        if key in node:
            out[key] = [to_json_schema(n) for n in node[key]]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


class _Interner:
    """Stores each distinct object subschema once under ``$defs`` and refers to it."""

    def __init__(self) -> None:
        self.defs: dict[str, Any] = {}

    def __call__(self, schema: dict[str, Any], top: bool = False) -> dict[str, Any]:
        schema = dict(schema)
        if "properties" in schema:
            schema["properties"] = {k: self(v) for k, v in schema["properties"].items()}
        for key in ("items", "additionalProperties"):
            if isinstance(schema.get(key), dict):
                schema[key] = self(schema[key])
        for key in ("allOf", "anyOf", "oneOf"):
            if key in schema:
                schema[key] = [self(n) for n in schema[key]]
        text = json.dumps(schema, sort_keys=True)
        if top or len(text) < 400:  # small ones are cheaper inline than behind a $ref
            return schema
        name = "n" + hashlib.sha1(text.encode()).hexdigest()[:12]
        self.defs.setdefault(name, schema)
        return {"$ref": f"#/$defs/{name}"}


def kind_schema(crd: dict[str, Any], kind: str) -> dict[str, Any]:
    """The strict JSON Schema of ``kind`` at ``ray.io/v1`` from its CRD document."""
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = to_json_schema(version["schema"]["openAPIV3Schema"])
    props = schema["properties"]
    props["apiVersion"] = {"const": "ray.io/v1"}
    props["kind"] = {"const": kind}
    props["metadata"] = {"$ref": _OBJECT_META}  # the CRD says only `type: object`
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
    schema["additionalProperties"] = False
    return schema


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="crd/bases directory")
    parser.add_argument("--kuberay-version", default="1.7.0")
    args = parser.parse_args()
    intern = _Interner()
    kinds = {}
    for kind, filename in KINDS.items():
        crd = yaml.safe_load((args.source / filename).read_text())
        kinds[kind] = intern(kind_schema(crd, kind), top=True)
    major_minor = ".".join(args.kuberay_version.split(".")[:2])
    bundle = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://rlvr.invalid/schemas/kuberay-v{major_minor}-crds.json",
        "$comment": (
            f"KubeRay v{args.kuberay_version} CRDs (ray.io/v1 {', '.join(KINDS)}), converted "
            "from their OpenAPI v3 schemas to strict JSON Schema, descriptions removed, shared "
            "subschemas deduplicated. Source: github.com/ray-project/kuberay "
            "ray-operator/config/crd/bases (Apache-2.0); regenerate with "
            "deploy/schemas/vendor_kuberay.py."
        ),
        "$defs": {**kinds, **dict(sorted(intern.defs.items()))},
    }
    out = HERE / f"kuberay-v{major_minor}-crds.json"
    out.write_text(json.dumps(bundle, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out} ({out.stat().st_size} bytes, {len(intern.defs)} shared subschemas)")


if __name__ == "__main__":
    main()
