"""``/v1/jobs``: submit, list, inspect, cancel and resume training jobs; their live data."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import ValidationError

from rlvr.api.deps import (
    JobDep,
    RunnerDep,
    SettingsDep,
    StoreDep,
    UserDep,
    check_job_quota,
    stream_slot,
)
from rlvr.api.models import (
    CheckpointList,
    CheckpointOut,
    ErrorOut,
    JobCreated,
    JobDetail,
    JobList,
    JobSummary,
    LogsOut,
    MetricsOut,
    SampleList,
    SampleOut,
    Series,
)
from rlvr.api.validation import MAX_STORED_SPEC_BYTES, check_spec, parse_spec_body
from rlvr.config import JobSpec
from rlvr.jobs.store import TERMINAL, JobStatus, new_job_id

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # Ray colours its log lines
SSE_POLL_S = 0.5  # how often the event stream looks for new rows (the driver is elsewhere)
MAX_SPEC_BYTES = 1_000_000

_SPEC_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/JobSpec"}},
            "application/yaml": {"schema": {"$ref": "#/components/schemas/JobSpec"}},
        },
    }
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "no such job"}
}


def _body_error(msg: str, loc: tuple[Any, ...] = ()) -> RequestValidationError:
    return RequestValidationError([{"loc": ["body", *loc], "msg": msg, "type": "value_error"}])


async def _read_spec(request: Request) -> JobSpec:
    """A JobSpec from a JSON or YAML body (YAML is what people paste)."""
    raw = await request.body()
    if len(raw) > MAX_SPEC_BYTES:
        raise _body_error(f"the spec is larger than {MAX_SPEC_BYTES} bytes")
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    try:  # (the middleware let only JSON and YAML media types through)
        data = await run_in_threadpool(parse_spec_body, raw, ctype)
    except ValueError as exc:
        raise _body_error(str(exc)) from None
    if not isinstance(data, dict):
        raise _body_error("a job spec must be a mapping (JSON object / YAML mapping)")
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        errors = [
            {"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]}
            for e in exc.errors(include_url=False)
        ]
        raise RequestValidationError(errors) from None


@router.post(
    "",
    status_code=201,
    response_model=JobCreated,
    summary="Submit a job spec (JSON or YAML)",
    openapi_extra=_SPEC_BODY,
    responses={
        422: {"description": "the spec is invalid or cannot fit; `detail[].loc` names the field"},
        200: {"description": "dry_run=true: the placement plan (docs/gpu.md); nothing created"},
    },
)
async def submit_job(
    request: Request,
    store: StoreDep,
    runner: RunnerDep,
    settings: SettingsDep,
    user: UserDep,
    dry_run: Annotated[bool, Query(description="return the placement plan only")] = False,
    priority: Annotated[
        int,
        Query(ge=-100, le=100, description="admission order, higher first; above 0: admins only"),
    ] = 0,
) -> Any:
    """Validate the spec against this service (verifiers, model and data roots, every data
    row) and the cluster (the placement plan: a job that cannot fit is refused) and queue it;
    the runner submits it to Ray as a job of the same id."""
    from rlvr.plan.service import plan_errors, plan_for_service, write_plan

    if priority > 0 and not user.admin:
        raise HTTPException(403, detail="priority: only an admin may set a priority above 0")
    await run_in_threadpool(check_job_quota, store, user, settings.quota_jobs)
    spec = await _read_spec(request)
    spec, errors = await run_in_threadpool(check_spec, spec, settings)
    if errors:
        raise RequestValidationError(errors)
    if len(spec.to_json()) > MAX_STORED_SPEC_BYTES:
        raise _body_error(f"the spec is larger than {MAX_STORED_SPEC_BYTES} bytes once parsed")
    plan = await run_in_threadpool(plan_for_service, spec, runner)
    if dry_run:
        return JSONResponse(plan.to_dict())
    if plan_errors(plan):
        raise RequestValidationError(plan_errors(plan))
    job_id = new_job_id(spec.name)
    run_dir = Path(settings.runs_dir).expanduser() / job_id
    await run_in_threadpool(write_plan, run_dir, plan)
    job = await run_in_threadpool(
        store.create_job, spec, run_dir=str(run_dir), job_id=job_id, owner=user.user,
        priority=priority,
    )  # fmt: skip
    runner.wake()
    return JobCreated(id=job.id, status=job.status)


@router.get("", response_model=JobList, summary="List jobs, newest first")
def list_jobs(
    store: StoreDep,
    user: UserDep,
    status: JobStatus | None = None,
    owner: Annotated[str | None, Query(max_length=64, description="admins: one user's")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> JobList:
    """A user sees its own jobs, an admin everyone's; queued jobs show their place in the
    admission queue (``queue_position``)."""
    owner = owner if user.admin else user.user
    jobs, total = store.list_jobs(status=status, owner=owner, limit=limit, offset=offset)
    places = store.queue_positions() if any(j.status == "queued" for j in jobs) else {}
    rows = [JobSummary.of(j, store.latest_metrics(j.id), places.get(j.id)) for j in jobs]
    return JobList(jobs=rows, total=total, limit=limit, offset=offset)


def _detail(store: Any, job: Any) -> JobDetail:
    latest = store.latest_metrics(job.id)
    place = store.queue_positions().get(job.id) if job.status == "queued" else None
    summary = JobSummary.of(job, latest, place)
    return JobDetail(
        **summary.model_dump(),
        spec=JobSpec.model_validate(job.spec),
        latest_metrics=latest,
        attempt=job.attempt,
        submission_id=job.submission_id,
        ray_status=job.ray_status,
        run_dir=job.run_dir,
        last_event_id=store.last_event_id(job.id),
    )


@router.get("/{job_id}", response_model=JobDetail, responses=_NOT_FOUND)
def get_job(job: JobDep, store: StoreDep) -> JobDetail:
    """Status, step, latest metrics, error and spec."""
    return _detail(store, job)


@router.post(
    "/{job_id}/cancel",
    response_model=JobDetail,
    responses={**_NOT_FOUND, 409: {"model": ErrorOut, "description": "already finished"}},
)
def cancel_job(job: JobDep, store: StoreDep, runner: RunnerDep) -> JobDetail:
    """Mark the job ``cancelled`` and stop its Ray job (the runner does so within a second)."""
    if job.terminal:
        raise HTTPException(409, detail=f"job {job.id} is already {job.status}")
    store.set_status(job.id, "cancelled", error="cancelled by request")
    runner.wake()
    return _detail(store, store.get_job(job.id))


@router.post(
    "/{job_id}/resume",
    status_code=202,
    response_model=JobCreated,
    responses={**_NOT_FOUND, 409: {"model": ErrorOut, "description": "not resumable"}},
)
def resume_job(
    job: JobDep, store: StoreDep, runner: RunnerDep, user: UserDep, settings: SettingsDep
) -> JobCreated:
    """Continue a failed or cancelled job from its last checkpoint (a new Ray job)."""
    if job.status not in ("failed", "cancelled"):
        raise HTTPException(
            409, detail=f"job {job.id} is {job.status}; only failed or cancelled jobs resume"
        )
    if not store.checkpoints(job.id):
        raise HTTPException(
            409, detail=f"job {job.id} has no checkpoint to resume from; submit it again instead"
        )
    check_job_quota(store, user, settings.quota_jobs)
    try:
        job = store.reopen(job.id)
    except ValueError as exc:
        raise HTTPException(409, detail=str(exc)) from None
    runner.wake()
    return JobCreated(id=job.id, status=job.status)


@router.get("/{job_id}/plan", responses={**_NOT_FOUND, 200: {"description": "the plan"}})
def get_plan(job: JobDep) -> JSONResponse:
    """The placement plan made at submission (actors, GPU shares, memory per GPU)."""
    from rlvr.plan.service import read_plan

    plan = read_plan(job.run_dir)
    if plan is None:
        raise HTTPException(404, detail=f"job {job.id} has no plan (submitted before plans)")
    return JSONResponse(plan)


@router.get("/{job_id}/metrics", response_model=MetricsOut, responses=_NOT_FOUND)
def get_metrics(
    job: JobDep,
    store: StoreDep,
    names: Annotated[
        list[str] | None, Query(description="metric names, repeated or comma-separated")
    ] = None,
    since_step: Annotated[
        int | None, Query(ge=-1, le=2**62, description="only steps after this one")
    ] = None,
) -> MetricsOut:
    """Series per metric name (``reward/mean``, ``accuracy``, ...), ordered by step."""
    wanted = [n.strip() for raw in names or [] for n in raw.split(",") if n.strip()]
    series = store.metric_series(job.id, names=wanted, since_step=since_step)
    return MetricsOut(
        job_id=job.id,
        series={
            name: Series(steps=[s for s, _ in pts], values=[v for _, v in pts])
            for name, pts in series.items()
        },
    )


@router.get(
    "/{job_id}/events",
    response_class=EventSourceResponse,
    responses={**_NOT_FOUND, 200: {"description": "text/event-stream of status, metrics, "
                                   "samples, checkpoint and truncate events"}},
)  # fmt: skip
async def stream_events(
    job: JobDep,
    store: StoreDep,
    _slot: Annotated[None, Depends(stream_slot)],
    after: Annotated[int | None, Query(ge=0, le=2**62, description="last event id seen")] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> AsyncIterator[ServerSentEvent]:
    """Server-Sent Events: every new metric step, sample batch, checkpoint and status change
    of the job, as it is written. Each event's ``id`` is a cursor (``Last-Event-ID`` or
    ``?after=`` resumes after it); the stream ends once the job is finished."""
    cursor = after or 0
    if last_event_id and last_event_id.isascii() and last_event_id.isdigit():
        cursor = max(cursor, int(last_event_id))
    # Each poll reads new event rows only: every status change is an event too, so the
    # job's status is followed from them (no job row, no spec parsed every 0.5 s).
    status = job.status
    while True:
        events = await run_in_threadpool(store.events_after, job.id, cursor)
        for e in events:
            cursor = e.id
            if e.kind == "status":
                status = e.payload.get("status", status)
            yield ServerSentEvent(
                event=e.kind, id=str(e.id), data={"job_id": job.id, "ts": e.ts, **e.payload}
            )
        if events:
            continue  # drain a backlog before sleeping
        if status in TERMINAL:  # its final status event has been sent
            return
        await asyncio.sleep(SSE_POLL_S)


@router.get("/{job_id}/samples", response_model=SampleList, responses=_NOT_FOUND)
def get_samples(
    job: JobDep,
    store: StoreDep,
    step: Annotated[int | None, Query(ge=0, le=2**62)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> SampleList:
    """Completions with their rewards and each verifier's verdict, newest step first."""
    rows = store.samples(job.id, step=step, limit=limit, offset=offset)
    return SampleList(job_id=job.id, samples=[SampleOut.model_validate(r) for r in rows])


@router.get("/{job_id}/checkpoints", response_model=CheckpointList, responses=_NOT_FOUND)
def get_checkpoints(job: JobDep, store: StoreDep) -> CheckpointList:
    """Checkpoints written so far; each path is an HF-format model directory."""
    return CheckpointList(
        job_id=job.id, checkpoints=[CheckpointOut(**c) for c in store.checkpoints(job.id)]
    )


@router.get(
    "/{job_id}/checkpoints/{step}/download",
    response_class=StreamingResponse,
    responses={
        404: {"model": ErrorOut, "description": "no such job, checkpoint or adapter"},
        200: {
            "description": 'a tar of the exported model (docs/training.md, "Exporting")',
            "content": {"application/x-tar": {}},
        },
    },
)
def download_checkpoint(
    job: JobDep,
    settings: SettingsDep,
    step: Annotated[int, PathParam(ge=0, le=2**62, description="a checkpoint's step")],
    adapter: Annotated[bool, Query(description="the LoRA adapter alone (LoRA runs only)")] = False,
) -> StreamingResponse:
    """Checkpoint ``step`` as ``rlvr export`` writes it (the model, LoRA merged, or the
    adapter alone; tokenizer; README.md model card), streamed as an uncompressed tar with
    everything under ``<job id>-step_<step>/``. The trainer's state is never included."""
    from rlvr.export import ExportError, plan_export

    runs = Path(settings.runs_dir).expanduser().resolve()
    run_dir = Path(job.run_dir).expanduser().resolve()
    gone = HTTPException(404, detail=f"job {job.id} has no checkpoint at step {step}")
    if not run_dir.is_relative_to(runs):  # only what this service's runs dir holds
        raise gone
    try:
        plan = plan_export(run_dir, step, adapter, spec=job.spec)
    except ExportError as exc:
        if adapter and "no LoRA adapter" in str(exc):
            raise HTTPException(
                404, detail=f"job {job.id} is not a LoRA run: step {step} has no adapter"
            ) from None
        raise gone from None
    from rlvr.export import iter_tar

    folder = f"{job.id}-step_{step}" + ("-adapter" if adapter else "")
    return StreamingResponse(
        iter_tar(plan, folder),
        media_type="application/x-tar",
        headers={"Content-Disposition": f'attachment; filename="{folder}.tar"'},
    )


@router.get("/{job_id}/logs", response_model=LogsOut, responses=_NOT_FOUND)
def get_logs(
    job: JobDep,
    runner: RunnerDep,
    tail: Annotated[int, Query(ge=1, le=100_000, description="last N lines")] = 200,
) -> LogsOut:
    """The driver's log: from Ray when it can answer, else the run dir's ``driver.log``."""
    text, source = "", "none"
    if job.submission_id:
        with contextlib.suppress(Exception):
            text, source = runner.logs(job), "ray"
    if source == "none":
        path = Path(job.run_dir) / "driver.log"
        with contextlib.suppress(OSError):
            text, source = path.read_text(errors="replace"), "file"
    lines = _ANSI.sub("", text).splitlines()[-tail:]
    return LogsOut(job_id=job.id, source=source, text="\n".join(lines))
