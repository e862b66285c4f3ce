"""API tests: a real uvicorn server over HTTP on a temporary SQLite file, with data and
model roots under tmp_path. The runner is not started (no Ray): jobs stay ``queued``."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from rlvr.api.app import create_app
from rlvr.api.server import BackgroundServer
from rlvr.api.settings import Settings


def make_roots(tmp: Path) -> dict[str, Path]:
    data, models = tmp / "data", tmp / "models"
    data.mkdir()
    models.mkdir()
    rows = [{"prompt": f"What is {i} + {i}?", "reference": str(2 * i)} for i in range(5)]
    (data / "good.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (data / "bad.jsonl").write_text(
        json.dumps(rows[0]) + "\n" + json.dumps(rows[1]) + "\n{not json\n"
    )
    (data / "noref.jsonl").write_text(
        json.dumps(rows[0]) + "\n" + json.dumps({"prompt": "2+2?"}) + "\n"
    )
    (models / "no-config").mkdir()
    (tmp / "outside.jsonl").write_text(json.dumps(rows[0]) + "\n")
    return {"data": data, "models": models}


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    tmp_path = tmp_path_factory.mktemp("service")
    roots = make_roots(tmp_path)
    return Settings(
        db_url=f"sqlite:///{tmp_path / 'rlvr.db'}",
        data_roots=[roots["data"]],
        model_roots=[roots["models"]],
        runs_dir=tmp_path / "runs",
    )


@pytest.fixture(scope="module")
def server(settings: Settings):
    with BackgroundServer(create_app(settings, start_runner=False)) as srv:
        yield srv


@pytest.fixture(scope="module")
def http(server: BackgroundServer):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client
