"""Building and running without a registry: the Dockerfiles take their base as a build arg,
the CPU compose stack keeps to host networking on loopback, and deploy/engine.py reads the
mirror apt uses and keys the base image by its recipe. (The builds themselves take minutes:
deploy/build_local.py and deploy/stack_local.py; their last results are in docs/deploy.md.)"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from docker_engine import load_engine_module

from rlvr.api.settings import ENV_VARS, Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_CPU = REPO / "deploy" / "compose.cpu.yaml"
EXAMPLE_ENV = {"RLVR_API_TOKEN": "t0k", "POSTGRES_PASSWORD": "pw", "RAY_AUTH_TOKEN": "r4y"}


def _interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?message}``."""

    def one(m: re.Match) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if name in env:
            return env[name]
        if op == ":-":
            return arg
        raise KeyError(f"{name} unset: {arg}")

    return re.sub(r"\$\{([A-Z_]+)(?:(:[-?])([^}]*))?\}", one, text)


@pytest.fixture(scope="module")
def stack():
    return yaml.safe_load(_interpolate(COMPOSE_CPU.read_text(), EXAMPLE_ENV))


@pytest.mark.parametrize(
    ("name", "default"),
    [
        ("api.Dockerfile", "python:${PYTHON_VERSION}-slim-bookworm"),
        ("worker.Dockerfile", "nvidia/cuda:${CUDA_VERSION}-base-ubuntu${UBUNTU_VERSION}"),
        ("postgres.Dockerfile", "debian:bookworm-slim"),
    ],
)
def test_dockerfiles_build_on_a_base_given_as_a_build_arg(validate, name, default):
    stages = validate.parse_dockerfile(REPO / "deploy" / "docker" / name)
    prelude = dict(a.split("=", 1) for ins, a in stages[0] if ins == "ARG" and "=" in a)
    assert prelude["BASE_IMAGE"] == default  # what users pull by default
    froms = [args for stage in stages[1:] for ins, args in stage if ins == "FROM"]
    app_stages = [f for f in froms if "uv" not in f.lower()]
    assert app_stages and all(f.split()[0] == "${BASE_IMAGE}" for f in app_stages), froms


def _args(stage: list[tuple[str, str]]) -> dict[str, str]:
    return dict(a.split("=", 1) for ins, a in stage if ins == "ARG" and "=" in a)


def test_uv_image_puts_uv_where_the_worker_copies_it_from(validate, versions):
    # deploy/docker/uv.Dockerfile stands in for ghcr.io/astral-sh/uv (UV_IMAGE): uv from PyPI,
    # at the pinned version, on the given base, left at the path the worker copies.
    assert validate.lint_dockerfile(REPO / "deploy/docker/uv.Dockerfile") == []
    stages = validate.parse_dockerfile(REPO / "deploy" / "docker" / "uv.Dockerfile")
    assert _args(stages[0])["UV_VERSION"] == versions["UV_VERSION"]
    assert stages[1][0] == ("FROM", "${BASE_IMAGE} AS build")
    install = "\n".join(a for ins, a in stages[1] if ins == "RUN")
    assert '"uv==${UV_VERSION}"' in install and "/uv --version" in install
    final = [a for ins, a in stages[-1] if ins == "COPY"]
    assert final == ["--from=build /uv /uvx /"]
    worker = validate.parse_dockerfile(REPO / "deploy" / "docker" / "worker.Dockerfile")
    copies = [a for stage in worker for ins, a in stage if ins == "COPY" and "--from=uv" in a]
    assert copies == ["--from=uv /uv /usr/local/bin/uv"]


def test_worker_takes_the_bases_python_when_python_downloads_are_off(validate):
    # Default: uv's own default (a standalone CPython where the base has none of
    # PYTHON_VERSION, as on the CUDA base). UV_PYTHON_DOWNLOADS=never: the base's python3.11,
    # and /opt/python, which the runtime stage copies, must exist though empty.
    stages = validate.parse_dockerfile(REPO / "deploy" / "docker" / "worker.Dockerfile")
    build = next(s for s in stages if s and s[0] == ("FROM", "${BASE_IMAGE} AS build"))
    assert _args(build)["UV_PYTHON_DOWNLOADS"] == "automatic"
    env = " ".join(a for ins, a in build if ins == "ENV").split()
    assert "UV_PYTHON_DOWNLOADS=${UV_PYTHON_DOWNLOADS}" in env
    assert "UV_PYTHON_INSTALL_DIR=/opt/python" in env
    first_run = next(a for ins, a in build if ins == "RUN")
    assert first_run.index("mkdir -p /opt/python") < first_run.index("uv venv")
    assert ("COPY", "--from=build /opt/python /opt/python") in stages[-1]


def test_postgres_dockerfile_lints_clean_and_its_entrypoint_is_in_the_context(validate):
    assert validate.lint_dockerfile(REPO / "deploy/docker/postgres.Dockerfile") == []
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert "!deploy/docker/postgres-entrypoint.sh" in ignore  # COPYed by the Dockerfile


def test_cpu_stack_validates_against_the_compose_spec(validate):
    assert validate.validate_compose(COMPOSE_CPU) == []


def test_cpu_stack_uses_host_networking_on_loopback_only(stack):
    services = stack["services"]
    assert set(services) == {"postgres", "ray-head", "ray-worker", "api"}
    for name, service in services.items():
        assert service["network_mode"] == "host", name
        assert "ports" not in service, name  # nothing published: host networking, loopback
    assert services["postgres"]["environment"]["PGHOST_ADDR"] == "127.0.0.1"
    for name in ("ray-head", "ray-worker"):
        assert "--node-ip-address=127.0.0.1" in services[name]["command"], name
    assert "--dashboard-host=127.0.0.1" in services["ray-head"]["command"]
    assert services["api"]["environment"]["RLVR_HOST"] == "127.0.0.1"


def test_cpu_stack_ray_nodes_run_the_worker_image_unless_told_otherwise(stack):
    # deploy/stack_local.py sets RLVR_WORKER_IMAGE (the API image with --ray-image api).
    images = {name: s["image"] for name, s in stack["services"].items()}
    assert images["ray-head"] == images["ray-worker"] == "rlvr-worker:local"
    assert images["api"] == "rlvr-api:local"
    env = {**EXAMPLE_ENV, "RLVR_WORKER_IMAGE": "rlvr-api:local"}
    other = yaml.safe_load(_interpolate(COMPOSE_CPU.read_text(), env))["services"]
    assert {s["image"] for s in other.values() if s is not other["postgres"]} == {"rlvr-api:local"}


def test_cpu_stack_api_settings_point_at_its_postgres_and_ray_head(stack, monkeypatch):
    services = stack["services"]
    for var in set(ENV_VARS.values()) | {"RLVR_HOME"}:
        monkeypatch.delenv(var, raising=False)
    for key, value in services["api"]["environment"].items():
        monkeypatch.setenv(key, str(value))
    settings = Settings.from_env()
    assert settings.api_token == EXAMPLE_ENV["RLVR_API_TOKEN"]
    db = urlsplit(settings.db_url)
    pgport = str(services["postgres"]["environment"]["PGPORT"])
    assert (db.hostname, str(db.port)) == ("127.0.0.1", pgport)
    assert db.password == EXAMPLE_ENV["POSTGRES_PASSWORD"]
    ray = urlsplit(settings.ray_address)
    assert f"--dashboard-port={ray.port}" in services["ray-head"]["command"]
    gcs = next(a for a in services["ray-head"]["command"] if a.startswith("--port="))
    assert f"--address=127.0.0.1:{gcs.split('=')[1]}" in services["ray-worker"]["command"]
    # the job drivers (on the Ray nodes) reach the same store, and all share the runs volume
    for name in ("ray-head", "ray-worker"):
        assert services[name]["environment"]["RLVR_DB_URL"] == settings.db_url, name
        assert f"runs:{settings.runs_dir}" in services[name]["volumes"], name
    assert f"runs:{settings.runs_dir}" in services["api"]["volumes"]


def test_engine_reads_the_mirror_apt_uses(tmp_path):
    engine = load_engine_module()
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n"
    )
    assert engine.debian_mirror(tmp_path) == "http://mirror.example/debian"
    (tmp_path / "sources.list").write_text("deb http://old.example/debian bookworm main\n")
    assert engine.debian_mirror(tmp_path) == "http://old.example/debian"
    assert engine.debian_mirror(tmp_path / "none") == engine.DEFAULT_MIRROR


def test_base_image_tag_is_keyed_by_its_recipe(monkeypatch):
    engine = load_engine_module()
    tag = engine.base_image_tag("http://a.example/debian")
    assert re.fullmatch(r"rlvr-base:bookworm-[0-9a-f]{12}", tag)
    assert engine.base_image_tag("http://a.example/debian") == tag
    assert engine.base_image_tag("http://b.example/debian") != tag
    monkeypatch.setattr(engine, "PACKAGES", (*engine.PACKAGES, "curl"))
    assert engine.base_image_tag("http://a.example/debian") != tag
