"""deploy/kuberay/: every object validates against the committed Kubernetes and KubeRay
schemas, and the pieces fit together (token auth, RAY_ADDRESS, storage, the job spec)."""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from rlvr.api.settings import ENV_VARS, Settings
from rlvr.config import JobSpec

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((REPO / "deploy" / "kuberay").glob("*.yaml"))
SETTINGS_ENV = set(ENV_VARS.values()) | {"RLVR_HOME"}


def _ray_pod_templates(manifests) -> list[tuple[str, dict]]:
    """(label, pod template) of every Ray pod: the RayCluster's and the RayJob's."""
    specs = [("RayCluster", manifests[("RayCluster", "rlvr")]["spec"])]
    for (kind, name), obj in manifests.items():
        if kind == "RayJob":
            specs.append((f"RayJob/{name}", obj["spec"]["rayClusterSpec"]))
    templates = []
    for label, spec in specs:
        templates.append((f"{label} head", spec["headGroupSpec"]["template"]))
        for group in spec["workerGroupSpecs"]:
            templates.append((f"{label} {group['groupName']}", group["template"]))
    return templates


def _resolve_env(env: list[dict], secrets: dict[str, str]) -> dict[str, str]:
    """Container env as the kubelet builds it: secretKeyRef values, then $(VAR) expansion."""
    resolved: dict[str, str] = {}
    for var in env:
        if "valueFrom" in var:
            ref = var["valueFrom"]["secretKeyRef"]
            key = f"{ref['name']}/{ref['key']}"
            if key in secrets or not ref.get("optional"):  # optional and absent: left unset
                resolved[var["name"]] = secrets[key]
        else:
            resolved[var["name"]] = re.sub(
                r"\$\((\w+)\)", lambda m: resolved.get(m[1], m[0]), var["value"]
            )
    return resolved


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_validates_against_kubernetes_and_kuberay_schemas(validate, path):
    problems = validate.validate_manifest_file(path)
    assert problems == [], "\n".join(problems)


def _mutate(obj: dict, path: str, value) -> dict:
    obj = copy.deepcopy(obj)
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]
    target = obj
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] = value
    return obj


@pytest.mark.parametrize(
    ("kind", "name", "path", "value", "expected"),
    [
        (
            "RayCluster",
            "rlvr",
            "spec.workerGroupSpecs.0.maxReplica",
            4,
            "'maxReplica' was unexpected",
        ),
        (
            "RayCluster",
            "rlvr",
            "spec.headGroupSpec.rayStartParams.num-gpus",
            0,
            "is not of type 'string'",
        ),
        (
            "RayCluster",
            "rlvr",
            "spec.authOptions.mode",
            "tokens",
            "is not one of ['disabled', 'token']",
        ),
        # What KubeRay's operator refuses although its CRD schema accepts it:
        ("RayCluster", "rlvr", "spec.workerGroupSpecs.0.minReplicas", -1, "negative (-1)"),
        (
            "RayCluster",
            "rlvr",
            "spec.workerGroupSpecs.0.minReplicas",
            5,
            "greater than maxReplicas",
        ),
        ("RayCluster", "rlvr", "spec.rayVersion", "2.50.0", "token auth needs Ray >= 2.52.0"),
        ("RayCluster", "rlvr", "spec.headGroupSpec.rayStartParams.labels", "a=b", "not supported"),
        ("RayJob", "rlvr-train-arithmetic", "spec.activeDeadlineSeconds", 0, "must be positive"),
        (
            "RayCluster",
            "rlvr",
            "spec.headGroupSpec.template.spec.containers.0.imagePullPolcy",
            "Always",
            "'imagePullPolcy' was unexpected",
        ),
        ("RayJob", "rlvr-train-arithmetic", "spec.submissionMode", "K8sMode", "is not one of"),
        ("Deployment", "rlvr-api", "spec.replica", 2, "'replica' was unexpected"),
        (
            "Deployment",
            "rlvr-api",
            "spec.template.spec.containers.0.ports.0.containerPort",
            "8000",
            "is not of type 'integer'",
        ),
        ("Service", "rlvr-api", "spec.type", 7, "is not of type"),
    ],
)
def test_schemas_reject_typos_and_wrong_types_naming_the_field(
    validate, manifests, kind, name, path, value, expected
):
    problems = validate.validate_object(_mutate(manifests[(kind, name)], path, value))
    assert problems, f"{path}={value!r} passed validation"
    joined = "\n".join(problems)
    assert expected in joined
    assert path.split(".")[-1] in joined  # the message names the offending field


def test_an_object_of_a_kind_without_schema_is_reported(validate):
    problems = validate.validate_object({"apiVersion": "ray.io/v1", "kind": "RayService"})
    assert problems and "no committed schema" in problems[0]


def test_gpu_worker_group_autoscales_within_bounds(manifests):
    spec = manifests[("RayCluster", "rlvr")]["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["rayVersion"]
    (group,) = spec["workerGroupSpecs"]
    assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    assert group["maxReplicas"] >= 1
    (container,) = group["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] >= 1
    assert spec["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0"


def test_every_ray_pod_has_dev_shm_in_memory(manifests):
    templates = _ray_pod_templates(manifests)
    assert len(templates) == 4  # RayCluster head + gpu, RayJob head + gpu
    for label, template in templates:
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        (container,) = template["spec"]["containers"]
        shm = [m for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm"]
        assert len(shm) == 1, label
        assert volumes[shm[0]["name"]]["emptyDir"]["medium"] == "Memory", label


def test_ray_pods_may_run_the_sandbox_and_run_as_non_root(manifests):
    for label, template in _ray_pod_templates(manifests):
        pod = template["spec"]["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0, label
        assert pod["seccompProfile"]["type"] == "Unconfined", label  # bubblewrap's userns
        (container,) = template["spec"]["containers"]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, label


def test_cluster_and_api_share_the_ray_token_secret(manifests):
    auth = manifests[("RayCluster", "rlvr")]["spec"]["authOptions"]
    assert auth["mode"] == "token"
    (container,) = manifests[("Deployment", "rlvr-api")]["spec"]["template"]["spec"]["containers"]
    env = {v["name"]: v for v in container["env"]}
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    # KubeRay reads the token from the Secret's key `auth_token`.
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": auth["secretName"],
        "key": "auth_token",
    }
    job = next(o for (k, _), o in manifests.items() if k == "RayJob")
    assert job["spec"]["rayClusterSpec"]["authOptions"]["mode"] == "token"


def test_api_env_gives_settings_that_point_at_ray_head_and_postgres(manifests, monkeypatch):
    deployment = manifests[("Deployment", "rlvr-api")]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    secrets = {
        "rlvr-api/token": "api-token",
        "rlvr-db/password": "0123abcd",
        "rlvr-ray-auth/auth_token": "ray-token",
    }
    env = _resolve_env(container["env"], secrets)
    ours = {k for k in env if k.startswith("RLVR_")}
    assert ours <= SETTINGS_ENV, f"unknown settings env vars: {ours - SETTINGS_ENV}"
    for var in SETTINGS_ENV:
        monkeypatch.delenv(var, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings.from_env()
    assert settings.host == "0.0.0.0" and settings.api_token == "api-token"

    # RAY_ADDRESS: the head Service KubeRay creates, <cluster>-head-svc, on the dashboard port
    cluster = manifests[("RayCluster", "rlvr")]
    ray = urlsplit(settings.ray_address)
    assert ray.hostname == f"{cluster['metadata']['name']}-head-svc"
    (head,) = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"]
    assert {"name": "dashboard", "containerPort": ray.port} in head["ports"]
    assert cluster["spec"]["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "0.0.0.0"

    db = urlsplit(settings.db_url)
    postgres = manifests[("Service", db.hostname)]
    assert db.scheme == "postgresql+psycopg" and db.password == "0123abcd"
    assert db.port in [p["port"] for p in postgres["spec"]["ports"]]
    # the driver on the head reaches the same store
    head_env = _resolve_env(head["env"], secrets)
    assert head_env["RLVR_DB_URL"] == settings.db_url

    # one port everywhere: RLVR_PORT, containerPort, probes, Service
    (port,) = container["ports"]
    assert port["containerPort"] == settings.port
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    service = manifests[("Service", "rlvr-api")]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]


def test_api_and_ray_pods_mount_the_shared_volume_at_the_runs_dir(manifests):
    claim = manifests[("PersistentVolumeClaim", "rlvr-shared")]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    pods = [("api", manifests[("Deployment", "rlvr-api")]["spec"]["template"])]
    pods += _ray_pod_templates(manifests)
    for label, template in pods:
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        (container,) = template["spec"]["containers"]
        runs_dir = next(e["value"] for e in container["env"] if e["name"] == "RLVR_RUNS_DIR")
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == runs_dir]
        assert volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] == "rlvr-shared", label
        assert mount["subPath"] == "runs", label


def test_rayjob_runs_rlvr_train_on_a_valid_job_spec(manifests):
    (job,) = [o for (k, _), o in manifests.items() if k == "RayJob"]
    from rlvr.cli import _build_parser

    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[0] == "rlvr"
    args = _build_parser().parse_args(argv[1:])
    assert args.command == "train"

    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    spec_dir, spec_file = str(Path(args.spec).parent), Path(args.spec).name
    (mount,) = [m for m in head["containers"][0]["volumeMounts"] if m["mountPath"] == spec_dir]
    (volume,) = [v for v in head["volumes"] if v["name"] == mount["name"]]
    config_map = manifests[("ConfigMap", volume["configMap"]["name"])]
    spec = JobSpec.from_yaml_text(config_map["data"][spec_file])  # raises naming a bad field
    assert spec.rollout.engine == "vllm"
    assert args.run_dir.startswith("/var/lib/rlvr/runs/")  # on the shared volume
    assert job["spec"]["shutdownAfterJobFinishes"] is True


def test_manifests_parse_as_plain_yaml_documents():
    for path in MANIFESTS:
        for obj in yaml.safe_load_all(path.read_text()):
            assert obj is None or {"apiVersion", "kind", "metadata"} <= set(obj), path.name


def test_crd_conversion_is_strict_and_maps_kubernetes_extensions(vendor_kuberay):
    from jsonschema import Draft202012Validator

    crd_schema = {
        "type": "object",
        "description": "dropped",
        "properties": {
            "port": {"x-kubernetes-int-or-string": True},
            "note": {"type": "string", "nullable": True},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            "tags": {"type": "object", "additionalProperties": {"type": "string"}},
            "n": {"type": "integer", "minimum": 0, "format": "int32"},
        },
        "required": ["n"],
    }
    schema = vendor_kuberay.to_json_schema(crd_schema)
    assert "description" not in json.dumps(schema)
    ok = {"port": "http", "note": None, "free": {"any": 1}, "tags": {"a": "b"}, "n": 0}
    assert list(Draft202012Validator(schema).iter_errors(ok)) == []
    for bad in (
        {**ok, "prot": 1},  # a typo: strict
        {**ok, "port": 1.5},
        {**ok, "tags": {"a": 1}},
        {**ok, "n": -1},
        {k: v for k, v in ok.items() if k != "n"},
    ):
        assert list(Draft202012Validator(schema).iter_errors(bad)), bad


def test_vendored_kuberay_schema_is_the_v1_7_crd(validate):
    bundle = json.loads((validate.SCHEMAS / "kuberay-v1.7-crds.json").read_text())
    assert "KubeRay v1.7.0 CRDs" in bundle["$comment"]
    spec = bundle["$defs"]["RayCluster"]["properties"]["spec"]
    if "$ref" in spec:  # repeated subschemas are stored once under $defs
        spec = bundle["$defs"][spec["$ref"].rsplit("/", 1)[1]]
    cluster = spec["properties"]
    # Fields of the v1.7 RayClusterSpec that a hand-written subset would likely miss.
    assert {"authOptions", "gcsFaultToleranceOptions", "managedBy", "suspend"} <= set(cluster)
