"""FastAPI dependencies: the settings, the store, the runner, and who is calling.

Authentication happens in :class:`rlvr.api.middleware.Guard` before any body is read; the
dependencies here only read the principal it found (and declare the bearer scheme for the
OpenAPI document).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from rlvr.api.auth import Principal
from rlvr.api.settings import Settings
from rlvr.jobs.runner import JobRunner
from rlvr.jobs.store import ACTIVE, JobRecord, JobStore

_bearer = HTTPBearer(
    auto_error=False,
    description="RLVR_API_TOKEN (the admin) or a token of RLVR_TOKENS_FILE, when the service sets any",
)


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> JobStore:
    return request.app.state.store


def get_runner(request: Request) -> JobRunner:
    return request.app.state.runner


def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller, as the middleware authenticated it (401 if it did not run: never open)."""
    principal = request.scope.get("state", {}).get("principal")
    if not isinstance(principal, Principal):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="missing or wrong bearer token: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return principal


UserDep = Annotated[Principal, Depends(require_token)]


def get_job(
    job_id: str, store: Annotated[JobStore, Depends(get_store)], user: UserDep
) -> JobRecord:
    """The job, if the caller may see it: its owner or an admin (404 to anyone else, so
    that job ids of other users are not even confirmed to exist)."""
    job = store.get_job(job_id)
    if job is None or not (user.admin or job.owner == user.user):
        raise HTTPException(status_code=404, detail=f"no job {job_id!r}")
    return job


_streams_lock = threading.Lock()


def stream_slot(request: Request, user: UserDep) -> Iterator[None]:
    """Hold one of the caller's event-stream slots while its stream is open (429 naming the
    quota when a user already has ``quota_streams`` open; admins are not limited)."""
    if user.admin:
        yield
        return
    quota = request.app.state.settings.quota_streams
    open_streams: dict[str, int] = request.app.state.open_streams
    with _streams_lock:
        if open_streams.get(user.user, 0) >= quota:
            raise HTTPException(
                status_code=429,
                detail=f"quota_streams: user {user.user!r} already has {quota} event streams "
                "open (RLVR_QUOTA_STREAMS); close one first",
                headers={"Retry-After": "5"},
            )
        open_streams[user.user] = open_streams.get(user.user, 0) + 1
    try:
        yield
    finally:
        with _streams_lock:
            open_streams[user.user] -= 1


def check_job_quota(store: JobStore, user: Principal, quota: int) -> None:
    """429 naming the quota when a (non-admin) user already has ``quota`` queued or running jobs."""
    if user.admin:
        return
    active = sum(store.list_jobs(status=s, owner=user.user, limit=1)[1] for s in ACTIVE)
    if active >= quota:
        raise HTTPException(
            status_code=429,
            detail=f"quota_jobs: user {user.user!r} has {active} queued or running jobs, the "
            f"most allowed (RLVR_QUOTA_JOBS={quota}); wait for one to finish or cancel one",
        )


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[JobStore, Depends(get_store)]
RunnerDep = Annotated[JobRunner, Depends(get_runner)]
JobDep = Annotated[JobRecord, Depends(get_job)]
