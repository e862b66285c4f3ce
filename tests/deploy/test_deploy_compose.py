"""deploy/compose.yaml: valid Compose, and an environment the service's settings accept and
that points at the other services."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from rlvr.api.settings import ENV_VARS, Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "deploy" / "compose.yaml"
SETTINGS_ENV = set(ENV_VARS.values()) | {"RLVR_HOME"}
RAY_NODES = ["ray-head", "ray-worker"]
_INTERPOLATION = re.compile(r"\$\{(\w+)(?::\?([^}]*))?\}")


def _example_env() -> dict[str, str]:
    values = {}
    for line in (REPO / "deploy/env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def _interpolate(value: str, env: dict[str, str]) -> str:
    return _INTERPOLATION.sub(lambda m: env[m[1]], value)


def _mounts(service: dict) -> dict[str, str]:
    """container path -> volume name, for named-volume mounts."""
    return {v.split(":")[1]: v.split(":")[0] for v in service.get("volumes", [])}


def test_compose_file_validates_against_the_compose_spec(validate):
    problems = validate.validate_compose(COMPOSE)
    assert problems == [], "\n".join(problems)


def test_compose_spec_check_catches_a_broken_file(validate, tmp_path):
    broken = yaml.safe_load(COMPOSE.read_text())
    broken["services"]["api"]["ports"] = "8000:8000"  # must be a list
    broken["services"]["ray-worker"]["shm_sizee"] = "16gb"  # typo
    path = tmp_path / "compose.yaml"
    path.write_text(yaml.safe_dump(broken))
    problems = "\n".join(validate.validate_compose(path))
    assert "ports" in problems and "shm_sizee" in problems


def test_every_secret_is_required_and_documented_in_env_example(compose):
    text = COMPOSE.read_text()
    used = {m[1]: m[2] for m in _INTERPOLATION.finditer(text)}
    assert set(used) == {
        "RLVR_API_TOKEN",
        "RLVR_METRICS_TOKEN",
        "RAY_AUTH_TOKEN",
        "POSTGRES_PASSWORD",
    }
    for var, message in used.items():
        # `${VAR:?msg}`: compose stops with msg instead of starting with an empty secret.
        assert message and var in message and "deploy/.env" in message
    assert set(used) <= set(_example_env())
    assert ".env" in (REPO / "deploy/.gitignore").read_text().split()


def test_compose_env_var_names_are_ones_the_settings_read(compose):
    for name, service in compose["services"].items():
        ours = {k for k in service.get("environment", {}) if k.startswith("RLVR_")}
        assert ours <= SETTINGS_ENV, f"{name}: unknown settings env vars {ours - SETTINGS_ENV}"


def test_api_environment_gives_settings_that_point_at_the_other_services(compose, monkeypatch):
    services = compose["services"]
    env = {
        k: _interpolate(str(v), _example_env()) for k, v in services["api"]["environment"].items()
    }
    for var in SETTINGS_ENV:
        monkeypatch.delenv(var, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings.from_env()

    assert settings.host == "0.0.0.0"
    assert settings.api_token == _example_env()["RLVR_API_TOKEN"]
    assert [p.split(":")[-1] for p in services["api"]["ports"]] == [str(settings.port)]

    db = urlsplit(settings.db_url)
    assert db.scheme == "postgresql+psycopg"
    assert db.hostname in services and db.port == 5432
    assert db.password == _example_env()["POSTGRES_PASSWORD"]
    assert services[db.hostname]["environment"]["POSTGRES_USER"] == db.username

    ray = urlsplit(settings.ray_address)
    assert ray.scheme == "http" and ray.hostname in services
    assert f"--dashboard-port={ray.port}" in services[ray.hostname]["command"]
    assert "--dashboard-host=0.0.0.0" in services[ray.hostname]["command"]
    # the driver runs on the head and must reach the store at the URL the API hands it
    assert (
        services["ray-head"]["environment"]["RLVR_DB_URL"]
        == services["api"]["environment"]["RLVR_DB_URL"]
    )

    for name in ["api", *RAY_NODES]:
        assert _mounts(services[name])[str(settings.runs_dir)] == "runs", name


def test_ray_nodes_share_the_token_and_workers_join_the_head(compose):
    services = compose["services"]
    for name in ["api", *RAY_NODES]:
        env = services[name]["environment"]
        assert env["RAY_AUTH_MODE"] == "token"
        assert env["RAY_AUTH_TOKEN"].startswith("${RAY_AUTH_TOKEN:?")
    head_port = next(a for a in services["ray-head"]["command"] if a.startswith("--port="))
    assert f"--address=ray-head:{head_port.split('=')[1]}" in services["ray-worker"]["command"]
    assert "--num-gpus=0" in services["ray-head"]["command"]


def test_gpu_worker_reserves_nvidia_gpus_and_ray_nodes_get_shared_memory(compose):
    services = compose["services"]
    devices = services["ray-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    for name in RAY_NODES:
        size = services[name]["shm_size"]
        assert re.fullmatch(r"\d+gb", size) and int(size[:-2]) >= 2, name


def test_sandbox_containers_may_create_user_namespaces(compose):
    # bubblewrap runs in the API (/v1/verify) and on the Ray nodes (the reward pool).
    for name in ["api", *RAY_NODES]:
        assert "seccomp=unconfined" in compose["services"][name]["security_opt"], name


def test_published_ports_are_bound_to_loopback(compose):
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_docker_compose_config_accepts_the_file(tmp_path):
    docker = shutil.which("docker")
    if (
        docker is None
        or subprocess.run(
            [docker, "compose", "version"], capture_output=True, timeout=30
        ).returncode
    ):
        pytest.skip("the docker compose plugin is not installed; the compose-spec check covers it")
    env = tmp_path / ".env"
    env.write_text((REPO / "deploy/env.example").read_text())
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "--env-file", str(env), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
