"""The service's settings, read from the environment (the one place deploy/ and the code agree on).

| env var            | field        | default                         |
|--------------------|--------------|---------------------------------|
| RLVR_HOST          | host         | 127.0.0.1                       |
| RLVR_PORT          | port         | 8000                            |
| RLVR_DB_URL        | db_url       | sqlite:///~/.rlvr/rlvr.db       |
| RLVR_API_TOKEN     | api_token    | unset: no auth                  |
| RAY_ADDRESS        | ray_address  | unset: the service starts a local head |
| RLVR_DATA_ROOTS    | data_roots   | ~/.rlvr/data (os.pathsep-separated) |
| RLVR_MODEL_ROOTS   | model_roots  | ~/.rlvr/models (os.pathsep-separated) |
| RLVR_RUNS_DIR      | runs_dir     | ~/.rlvr/runs                    |
| RLVR_DRIVER_PYTHON | driver_python | unset: this interpreter (local head), `python` (RAY_ADDRESS) |

``runs_dir`` must be reachable by the Ray job drivers (shared storage on a cluster).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field

ENV_VARS = {
    "host": "RLVR_HOST",
    "port": "RLVR_PORT",
    "db_url": "RLVR_DB_URL",
    "api_token": "RLVR_API_TOKEN",
    "ray_address": "RAY_ADDRESS",
    "data_roots": "RLVR_DATA_ROOTS",
    "model_roots": "RLVR_MODEL_ROOTS",
    "runs_dir": "RLVR_RUNS_DIR",
    "driver_python": "RLVR_DRIVER_PYTHON",
}


def _home() -> Path:
    return Path(os.environ.get("RLVR_HOME", "~/.rlvr")).expanduser()


class Settings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    db_url: str = Field(default_factory=lambda: f"sqlite:///{_home() / 'rlvr.db'}")
    api_token: str | None = None
    ray_address: str | None = None
    data_roots: list[Path] = Field(default_factory=lambda: [_home() / "data"])
    model_roots: list[Path] = Field(default_factory=lambda: [_home() / "models"])
    runs_dir: Path = Field(default_factory=lambda: _home() / "runs")
    # The interpreter a Ray job runs `-m rlvr.jobs.driver` with (must have rlvr installed).
    driver_python: str | None = None

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        values: dict[str, object] = {}
        for field_name, var in ENV_VARS.items():
            raw = os.environ.get(var)
            if raw in (None, ""):
                continue
            if field_name in ("data_roots", "model_roots"):
                values[field_name] = [Path(p).expanduser() for p in raw.split(os.pathsep) if p]
            else:
                values[field_name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)
