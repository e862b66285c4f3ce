"""Finding: an open, CSRF-able default. With no token every route was open with no warning,
`POST /v1/jobs` with `Content-Type: text/plain` was parsed as YAML (a web page could submit
or cancel jobs without a preflight), and any Host header was answered (DNS rebinding).
Now: bodies need a JSON/YAML media type (415), Host and Origin must be trusted names, and
`rlvr serve` refuses a non-loopback bind without a token (on loopback it warns)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from rlvr.api.server import free_port
from tests.security.conftest import client, make_settings, serve


@pytest.fixture(scope="module")
def server(tmp_service):
    with serve(make_settings(tmp_service, trusted_hosts=["rlvr.internal"])) as srv:
        yield srv


@pytest.fixture(scope="module")
def http(server):
    with client(server) as c:
        yield c


@pytest.mark.parametrize(
    "ctype", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None]
)
def test_a_body_a_browser_sends_without_preflight_is_415(http, small_spec, ctype):
    headers = {"Content-Type": ctype} if ctype else {}
    r = http.post("/v1/jobs", content=yaml.safe_dump(small_spec), headers=headers)
    assert r.status_code == 415, r.text
    assert http.get("/v1/jobs").json()["total"] == 0


def test_a_cross_site_form_cannot_cancel_a_job(http, small_spec):
    job = http.post("/v1/jobs", json=small_spec).json()["id"]
    r = http.post(f"/v1/jobs/{job}/cancel", content="x", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    r = http.post(f"/v1/jobs/{job}/cancel", headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    assert http.get(f"/v1/jobs/{job}").json()["status"] == "queued"
    same_origin = {"Origin": str(http.base_url).rstrip("/")}
    assert http.post(f"/v1/jobs/{job}/cancel", headers=same_origin).status_code == 200


def test_only_trusted_host_names_are_answered(server, http):
    for host in ("evil.example", f"evil.example:{server.port}", "127.0.0.1.evil.example"):
        r = http.get("/v1/jobs", headers={"Host": host})
        assert r.status_code == 400, (host, r.text)
        assert "RLVR_TRUSTED_HOSTS" in r.json()["detail"]
        assert http.get("/", headers={"Host": host}).status_code == 400  # the dashboard too
    for host in (f"localhost:{server.port}", "rlvr.internal", f"RLVR.internal:{server.port}"):
        assert http.get("/v1/jobs", headers={"Host": host}).status_code == 200, host
    # Probes and scrapers reach /healthz and /metrics by address.
    assert http.get("/healthz", headers={"Host": "10.1.2.3:8000"}).status_code == 200
    assert http.get("/metrics", headers={"Host": "10.1.2.3:8000"}).status_code == 200


def _env(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RLVR_", "RAY_"))}
    return {**env, "RLVR_HOME": str(tmp_path)}


def test_serve_refuses_a_public_bind_without_a_token(tmp_path):
    rlvr = [str(Path(sys.executable).parent / "rlvr")]
    out = subprocess.run(
        [*rlvr, "serve", "--host", "0.0.0.0", "--port", str(free_port())],
        env=_env(tmp_path), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "RLVR_API_TOKEN" in out.stderr and "127.0.0.1" in out.stderr


def test_serve_on_loopback_without_a_token_warns(tmp_path):
    # An unreachable RAY_ADDRESS: the service starts (its runner keeps retrying), no head.
    env = {**_env(tmp_path), "RAY_ADDRESS": "http://127.0.0.1:9"}
    cmd = [str(Path(sys.executable).parent / "rlvr"), "serve", "--port", str(free_port())]
    proc = subprocess.Popen(
        cmd, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    try:
        deadline = time.monotonic() + 120
        lines = []
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            if "WARNING" in line:
                break
        assert any("WARNING" in ln and "RLVR_API_TOKEN" in ln for ln in lines), lines
    finally:
        proc.terminate()
        proc.wait(timeout=60)
