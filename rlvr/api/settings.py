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
| RLVR_TOKENS_FILE   | tokens_file  | unset: RLVR_API_TOKEN is the only token (the admin's) |
| RLVR_TRUSTED_HOSTS | trusted_hosts | loopback names; comma-separated extra Host names, `*`: any |
| RLVR_MAX_BODY_BYTES | max_body_bytes | 1000000                       |
| RLVR_VERIFY_WORKERS | verify_workers | min(2, cpus): /v1/verify's pool, one request each |
| RLVR_VERIFY_TIMEOUT_S | verify_timeout_s | 30: the most one /v1/verify may take    |
| RLVR_QUOTA_JOBS    | quota_jobs   | 10 queued + running jobs per user (role user)    |
| RLVR_QUOTA_STREAMS | quota_streams | 4 open event streams per user (role user)       |
| RLVR_METRICS_TOKEN | metrics_token | unset: /metrics takes an admin's token (open without tokens) |

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
    "tokens_file": "RLVR_TOKENS_FILE",
    "trusted_hosts": "RLVR_TRUSTED_HOSTS",
    "max_body_bytes": "RLVR_MAX_BODY_BYTES",
    "verify_workers": "RLVR_VERIFY_WORKERS",
    "verify_timeout_s": "RLVR_VERIFY_TIMEOUT_S",
    "quota_jobs": "RLVR_QUOTA_JOBS",
    "quota_streams": "RLVR_QUOTA_STREAMS",
    "metrics_token": "RLVR_METRICS_TOKEN",
}
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


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
    # A YAML/JSON mapping token -> {user, role: admin | user} (per-user tokens).
    tokens_file: Path | None = None
    # Host names (Host and Origin headers) answered besides the loopback names; "*": any.
    trusted_hosts: list[str] = []
    # Request bodies are cut off past this many bytes (413), before anything parses them.
    max_body_bytes: int = Field(1_000_000, ge=1024, le=64_000_000)
    # /v1/verify: worker processes (= requests verified at once; more get 429) and deadline.
    verify_workers: int = Field(default_factory=lambda: min(2, os.cpu_count() or 1), ge=1, le=64)
    verify_timeout_s: float = Field(30.0, gt=0, le=600)
    # Per user (role "user"; admins are not limited): queued + running jobs, event streams.
    quota_jobs: int = Field(10, ge=1, le=100_000)
    quota_streams: int = Field(4, ge=1, le=10_000)
    # A bearer token for Prometheus: opens GET /metrics and nothing else.
    metrics_token: str | None = Field(None, min_length=16)

    @property
    def loopback_only(self) -> bool:
        """Whether the service is bound to a loopback address (reachable from this host only)."""
        return self.host in LOOPBACK_HOSTS or self.host.startswith("127.")

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        values: dict[str, object] = {}
        for field_name, var in ENV_VARS.items():
            raw = os.environ.get(var)
            if raw in (None, ""):
                continue
            if field_name in ("data_roots", "model_roots"):
                values[field_name] = [Path(p).expanduser() for p in raw.split(os.pathsep) if p]
            elif field_name == "trusted_hosts":
                values[field_name] = [h.strip().lower() for h in raw.split(",") if h.strip()]
            else:
                values[field_name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)
