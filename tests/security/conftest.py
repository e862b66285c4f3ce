"""Security tests: a real uvicorn server over HTTP on loopback, one per test module.

The job runner is not started (no Ray): what is tested is what the API lets a caller do
before anything reaches the cluster. Traffic is bounded (a few requests, small bursts).
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rlvr.api.app import create_app
from rlvr.api.server import BackgroundServer
from rlvr.api.settings import Settings

ALICE, BOB, OPS = "alice-token-0123456789", "bob-token-0123456789ab", "ops-token-0123456789abc"


def make_settings(tmp: Path, **overrides) -> Settings:
    """Settings for a throwaway service under ``tmp`` (data and model roots included)."""
    data, models = tmp / "data", tmp / "models"
    data.mkdir(exist_ok=True)
    models.mkdir(exist_ok=True)
    rows = [{"prompt": f"What is {i} + {i}?", "reference": str(2 * i)} for i in range(5)]
    (data / "good.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    values = {
        "db_url": f"sqlite:///{tmp / 'rlvr.db'}",
        "data_roots": [data],
        "model_roots": [models],
        "runs_dir": tmp / "runs",
        **overrides,
    }
    return Settings(**values)


@contextlib.contextmanager
def serve(settings: Settings) -> Iterator[BackgroundServer]:
    with BackgroundServer(create_app(settings, start_runner=False)) as server:
        yield server


def write_tokens(tmp: Path) -> Path:
    path = tmp / "tokens.yaml"
    path.write_text(
        f"{ALICE}: {{user: alice, role: user}}\n"
        f"{BOB}: {{user: bob, role: user}}\n"
        f"{OPS}: {{user: ops, role: admin}}\n"
    )
    return path


def client(server: BackgroundServer, token: str | None = None, **kw) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=60, **kw)


def raw_request(
    server: BackgroundServer, head: str, body: bytes = b"", read_s: float = 30.0
) -> str:
    """Send ``head`` (request line + headers, CRLF-terminated lines, no blank line) and
    ``body`` over a plain socket; the status line and headers of the answer."""
    with socket.create_connection((server.host, server.port), timeout=read_s) as sock:
        sock.sendall(head.encode() + b"\r\n" + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.decode("latin-1")


@pytest.fixture(scope="module")
def tmp_service(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("service")


@pytest.fixture
def small_spec() -> dict:
    """A spec that passes every check of an API-only service (no model is built)."""
    return {
        "name": "sec",
        "model": {"path": "tiny:arithmetic"},
        "data": {"train": "builtin:arithmetic?n=64", "eval": "builtin:arithmetic?n=16&seed=1"},
        "algorithm": {"group_size": 2, "prompts_per_step": 2, "max_steps": 4},
        "rollout": {"max_new_tokens": 16},
    }
