"""Image tags and versions in deploy/ come from one place (pyproject.toml + deploy/versions.env)
and cannot drift from it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def test_committed_files_agree_with_versions_env_and_pyproject(render):
    problems = render.drift(REPO)
    assert problems == [], "\n".join(problems)


def test_versions_follow_pyproject(versions):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert versions["RLVR_VERSION"] == project["version"]
    assert f"ray[default,rllib]=={versions['RAY_VERSION']}" in project["dependencies"]
    assert versions["API_IMAGE"].endswith(f"/rlvr-api:{project['version']}")
    assert versions["WORKER_IMAGE"].split(":")[-1].startswith(project["version"] + "-cu")


def test_drifted_files_are_reported_and_write_repairs_them(render, deploy_copy):
    worker = deploy_copy / "deploy/docker/worker.Dockerfile"
    worker.write_text(
        worker.read_text().replace("ARG RAY_VERSION=2.60.0", "ARG RAY_VERSION=2.59.0")
    )
    compose = deploy_copy / "deploy/compose.yaml"
    compose.write_text(compose.read_text().replace("rlvr-api:0.1.0", "rlvr-api:0.0.9"))
    cluster = deploy_copy / "deploy/kuberay/raycluster.yaml"
    cluster.write_text(cluster.read_text().replace('rayVersion: "2.60.0"', 'rayVersion: "2.52.0"'))

    problems = "\n".join(render.drift(deploy_copy))
    for rel in ["worker.Dockerfile", "compose.yaml", "raycluster.yaml"]:
        assert f"deploy/{rel}" in problems or rel in problems
    assert "-ARG RAY_VERSION=2.59.0" in problems and "+ARG RAY_VERSION=2.60.0" in problems

    changed = render.write(deploy_copy)
    assert set(changed) == {
        "deploy/docker/worker.Dockerfile",
        "deploy/compose.yaml",
        "deploy/kuberay/raycluster.yaml",
    }
    assert render.drift(deploy_copy) == []


def test_one_edit_moves_every_tag_and_build_arg(render, deploy_copy):
    env = deploy_copy / "deploy/versions.env"
    text = env.read_text()
    text = text.replace(
        "IMAGE_REGISTRY=registry.example.com/rlvr", "IMAGE_REGISTRY=ghcr.io/acme/rl"
    )
    text = text.replace("CUDA_VERSION=13.0.2", "CUDA_VERSION=13.1.0")
    env.write_text(text)
    pyproject = deploy_copy / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('version = "0.1.0"', 'version = "0.2.0"', 1))

    render.write(deploy_copy)

    compose = yaml.safe_load((deploy_copy / "deploy/compose.yaml").read_text())
    assert compose["services"]["api"]["image"] == "ghcr.io/acme/rl/rlvr-api:0.2.0"
    assert compose["services"]["ray-worker"]["image"] == "ghcr.io/acme/rl/rlvr-worker:0.2.0-cu13.1"
    assert compose["services"]["ray-head"]["build"]["args"]["CUDA_VERSION"] == "13.1.0"
    cluster = (deploy_copy / "deploy/kuberay/raycluster.yaml").read_text()
    assert cluster.count("ghcr.io/acme/rl/rlvr-worker:0.2.0-cu13.1") == 2
    assert (
        "ARG CUDA_VERSION=13.1.0" in (deploy_copy / "deploy/docker/worker.Dockerfile").read_text()
    )
    docs = (deploy_copy / "docs/deploy.md").read_text()
    assert "registry.example.com" not in docs and "ghcr.io/acme/rl/rlvr-api:0.2.0" in docs
    assert render.drift(deploy_copy) == []


@pytest.mark.parametrize(
    ("line", "replacement", "expected"),
    [
        ("PYTHON_VERSION=3.11", "PYTHON_VERSION=3.10", "requires-python"),
        ("VLLM_VERSION=0.26.0", "VLLM_VERSION=0.25.1", "vllm>=0.26"),
        ("TORCH_VERSION=2.11.0", "TORCH_VERSION=2.5.1", "torch>=2.6"),
    ],
)
def test_versions_env_that_breaks_pyproject_constraints_is_reported(
    render, deploy_copy, line, replacement, expected
):
    env = deploy_copy / "deploy/versions.env"
    env.write_text(env.read_text().replace(line, replacement))
    problems = render.check_against_pyproject(render.load_versions(deploy_copy), deploy_copy)
    assert len(problems) == 1 and expected in problems[0]
    assert render.drift(deploy_copy)  # drift() includes the contradiction


def test_versions_env_without_a_required_key_names_it(render, deploy_copy):
    env = deploy_copy / "deploy/versions.env"
    env.write_text(re.sub(r"(?m)^CUDA_VERSION=.*\n", "", env.read_text()))
    with pytest.raises(ValueError, match="set CUDA_VERSION"):
        render.load_versions(deploy_copy)


def test_malformed_versions_env_line_is_reported_with_its_line_number(render, deploy_copy):
    env = deploy_copy / "deploy/versions.env"
    env.write_text(env.read_text() + "torch version 2.11\n")
    with pytest.raises(ValueError, match=r"versions\.env:\d+: expected KEY=value"):
        render.load_versions(deploy_copy)


def test_every_image_in_compose_and_manifests_is_a_rendered_one(versions, compose, manifests):
    rendered = {versions["API_IMAGE"], versions["WORKER_IMAGE"], versions["POSTGRES_IMAGE"]}
    images = {svc["image"] for svc in compose["services"].values()}
    text = "".join(p.read_text() for p in (REPO / "deploy/kuberay").glob("*.yaml"))
    images |= set(re.findall(r"(?m)^\s*image:\s*(\S+)", text))
    assert images == rendered


def test_compose_build_args_are_declared_by_their_dockerfile(validate, compose):
    # Docker ignores a build arg the Dockerfile does not declare: a renamed ARG would
    # silently stop taking the pinned version.
    for name, service in compose["services"].items():
        if "build" not in service:
            continue
        stages = validate.parse_dockerfile(REPO / service["build"]["dockerfile"])
        declared = {args.split("=")[0] for stage in stages for ins, args in stage if ins == "ARG"}
        undeclared = set(service["build"]["args"]) - declared
        assert not undeclared, f"{name}: build args {undeclared} not declared as ARG"


def test_api_and_worker_images_share_python_torch_and_ray(validate, versions):
    def arg_defaults(name):
        stages = validate.parse_dockerfile(REPO / "deploy/docker" / name)
        return dict(
            args.split("=", 1)
            for stage in stages
            for ins, args in stage
            if ins == "ARG" and "=" in args
        )

    api, worker = arg_defaults("api.Dockerfile"), arg_defaults("worker.Dockerfile")
    assert api["PYTHON_VERSION"] == worker["PYTHON_VERSION"] == versions["PYTHON_VERSION"]
    assert api["TORCH_VERSION"] == worker["TORCH_VERSION"] == versions["TORCH_VERSION"]
    assert worker["RAY_VERSION"] == versions["RAY_VERSION"]
    assert worker["VLLM_VERSION"] == versions["VLLM_VERSION"]
