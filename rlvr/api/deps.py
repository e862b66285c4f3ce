"""FastAPI dependencies: the settings, the store, the runner, and bearer-token auth."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from rlvr.api.settings import Settings
from rlvr.jobs.runner import JobRunner
from rlvr.jobs.store import JobRecord, JobStore

_bearer = HTTPBearer(auto_error=False, description="RLVR_API_TOKEN, when the service sets one")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> JobStore:
    return request.app.state.store


def get_runner(request: Request) -> JobRunner:
    return request.app.state.runner


def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """With ``RLVR_API_TOKEN`` set, every ``/v1`` call needs ``Authorization: Bearer <it>``."""
    expected = request.app.state.settings.api_token
    if not expected:
        return
    given = credentials.credentials if credentials else ""
    if not secrets.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="missing or wrong bearer token: send 'Authorization: Bearer <RLVR_API_TOKEN>'",
            headers={"WWW-Authenticate": "Bearer"},
        )


def get_job(job_id: str, store: Annotated[JobStore, Depends(get_store)]) -> JobRecord:
    job = store.get_job(job_id)
    if job is None:
        raise HTTPException(status_code=404, detail=f"no job {job_id!r}")
    return job


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[JobStore, Depends(get_store)]
RunnerDep = Annotated[JobRunner, Depends(get_runner)]
JobDep = Annotated[JobRecord, Depends(get_job)]
