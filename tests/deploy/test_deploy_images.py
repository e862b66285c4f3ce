"""The Dockerfiles: hadolint-clean, and the API image starts the service the way
rlvr/api/settings.py and the CLI expect (entrypoint, env var names, port, /healthz)."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest

from rlvr.api.settings import ENV_VARS, Settings

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = ["api.Dockerfile", "worker.Dockerfile"]
# Env vars the settings read besides ENV_VARS: RLVR_HOME is the base of the defaults.
SETTINGS_ENV = set(ENV_VARS.values()) | {"RLVR_HOME"}


def _final_stage(validate, name: str) -> list[tuple[str, str]]:
    return validate.parse_dockerfile(REPO / "deploy/docker" / name)[-1]


def _env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env = {}
    for instruction, args in stage:
        if instruction == "ENV":
            for pair in args.split(" "):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def _last(stage, instruction: str) -> str:
    return [args for ins, args in stage if ins == instruction][-1]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_lints_clean_with_hadolint(validate, name):
    findings = validate.lint_dockerfile(REPO / "deploy/docker" / name)
    assert findings == [], "\n".join(findings)


def test_hadolint_does_report_a_bad_dockerfile(validate, tmp_path):
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get install curl\nCMD python app.py\n")
    findings = "\n".join(validate.lint_dockerfile(bad))
    assert "DL3007" in findings  # :latest
    assert "DL3025" in findings  # CMD not in JSON form


def test_api_image_entrypoint_runs_rlvr_serve(validate):
    stage = _final_stage(validate, "api.Dockerfile")
    command = json.loads(_last(stage, "ENTRYPOINT")) + json.loads(_last(stage, "CMD"))
    assert command == ["rlvr", "serve"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["rlvr"] == "rlvr.cli:main"
    from rlvr.cli import _COMMANDS

    assert "serve" in _COMMANDS


def test_rlvr_serve_parses_without_flags():
    # The image passes no --host/--port: `rlvr serve` must take them from RLVR_HOST/RLVR_PORT.
    from rlvr.cli import _build_parser

    args = _build_parser().parse_args(["serve"])
    assert callable(args.func)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_image_env_names_are_ones_the_settings_read(validate, name):
    env = _env(_final_stage(validate, name))
    ours = {k for k in env if k.startswith("RLVR_") or k == "RAY_ADDRESS"}
    assert ours, "the image sets no rlvr settings at all"
    assert ours <= SETTINGS_ENV, f"unknown settings env vars: {ours - SETTINGS_ENV}"


def test_api_image_env_gives_settings_listening_on_the_exposed_port(validate, monkeypatch):
    stage = _final_stage(validate, "api.Dockerfile")
    for var in SETTINGS_ENV:
        monkeypatch.delenv(var, raising=False)
    for key, value in _env(stage).items():
        if key in SETTINGS_ENV:
            monkeypatch.setenv(key, value)
    settings = Settings.from_env()
    assert settings.host == "0.0.0.0"  # reachable from outside the container
    assert _last(stage, "EXPOSE").split() == [str(settings.port)]
    volume = json.loads(_last(stage, "VOLUME"))[0]
    assert str(settings.runs_dir).startswith(volume)
    assert settings.db_url.startswith(f"sqlite:///{volume}")  # state lands in the volume


def _healthcheck_command(validate) -> list[str]:
    args = _last(_final_stage(validate, "api.Dockerfile"), "HEALTHCHECK")
    return json.loads(args[args.index("CMD ") + 4 :])


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_api_image_healthcheck_asks_healthz_on_rlvr_port(validate, status, healthy):
    handler = type("Handler", (_Health,), {"status": status})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        command = _healthcheck_command(validate)
        assert command[0] == "python"
        env = {**os.environ, "RLVR_PORT": str(server.server_port)}
        result = subprocess.run(
            [sys.executable, *command[1:]], env=env, capture_output=True, timeout=30
        )
    finally:
        server.shutdown()
        server.server_close()
    assert (result.returncode == 0) is healthy


def test_api_image_healthcheck_passes_against_the_real_service(validate, tmp_path):
    # The service under uvicorn, configured the way the image configures it (all interfaces,
    # RLVR_PORT), with the Ray runner off: /healthz must answer without a cluster, and
    # without the token the deployment sets (a service on all interfaces needs one).
    from rlvr.api.app import create_app
    from rlvr.api.server import BackgroundServer, free_port

    settings = Settings(
        host="0.0.0.0",
        port=free_port(),
        db_url=f"sqlite:///{tmp_path / 'rlvr.db'}",
        runs_dir=tmp_path / "runs",
        api_token="set-by-the-deployment",
    )
    app = create_app(settings, start_runner=False)
    command = _healthcheck_command(validate)
    with BackgroundServer(app, host=settings.host, port=settings.port):
        env = {**os.environ, "RLVR_PORT": str(settings.port)}
        result = subprocess.run(
            [sys.executable, *command[1:]], env=env, capture_output=True, text=True, timeout=30
        )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", DOCKERFILES)
def test_image_runs_as_a_non_root_user(validate, name):
    user = _last(_final_stage(validate, name), "USER").split(":")[0]
    assert user not in ("root", "0")


def test_worker_image_is_cuda_with_torch_vllm_and_ray_pinned(validate):
    stages = validate.parse_dockerfile(REPO / "deploy/docker/worker.Dockerfile")
    froms = [args for stage in stages for ins, args in stage if ins == "FROM"]
    prelude = dict(a.split("=", 1) for ins, a in stages[0] if ins == "ARG" and "=" in a)
    assert froms[-1] == "${BASE_IMAGE}"  # a build arg, by default NVIDIA's CUDA base
    assert prelude["BASE_IMAGE"].startswith("nvidia/cuda:${CUDA_VERSION}-")
    build = "\n".join(args for ins, args in stages[2] if ins == "RUN")
    for pin in ['"torch==${TORCH_VERSION}"', '"vllm==${VLLM_VERSION}"', "==${RAY_VERSION}"]:
        assert pin in build
    runtime = "\n".join(args for ins, args in stages[-1] if ins == "RUN")
    assert "bubblewrap" in runtime  # the code verifier's sandbox
    assert "wget" in runtime  # KubeRay's probes


def _dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes."""
    excluded = False
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if pattern.startswith("**/"):
            hit = any(fnmatch(part, pattern[3:]) for part in parts)
        else:
            hit = any(fnmatch(prefix, pattern) for prefix in prefixes)
        if hit:
            excluded = not negate
    return excluded


def test_dockerignore_keeps_what_the_images_copy_and_drops_local_state(validate):
    sources = set()
    for name in DOCKERFILES:
        for stage in validate.parse_dockerfile(REPO / "deploy/docker" / name):
            for ins, args in stage:
                if ins == "COPY" and not args.startswith("--from"):
                    sources.update(args.split()[:-1])
    assert sources >= {"pyproject.toml", "README.md", "rlvr", "verifiers", "sandbox"}
    for source in sources:
        assert not _dockerignore_excludes(source), f"{source} is copied but .dockerignore drops it"
        assert (REPO / source).exists()
    assert not _dockerignore_excludes("rlvr/api/settings.py")
    for local in [".venv/bin/python", ".git/HEAD", "deploy/.env", "tests/conftest.py", "runs/x"]:
        assert _dockerignore_excludes(local), f"{local} would be sent to the build"
    assert _dockerignore_excludes("rlvr/__pycache__/config.cpython-311.pyc")
