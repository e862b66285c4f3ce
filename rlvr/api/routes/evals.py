"""``/v1/evals``: eval-only jobs (a model, a checkpoint, or every checkpoint of a job) and
``/v1/compare``: chosen jobs' curves and eval results side by side, as JSON or CSV."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rlvr.api.deps import JobDep, SettingsDep, StoreDep, UserDep
from rlvr.config import MAX_EVAL_SAMPLES, MAX_EVAL_SETS, JobSpec, no_nul
from rlvr.jobs.evals import EvalRecord, EvalRunner, EvalStore

router = APIRouter(tags=["evals"])

MAX_COMPARE_JOBS = 8
MAX_COMPARE_METRICS = 8
MAX_COMPARE_POINTS = 5000  # per job and metric (the store's own cap on a series)


class EvalRequest(BaseModel):
    """What to evaluate (exactly one of ``model`` and ``job_id``) and on what."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        None, min_length=1, max_length=1024,
        description="tiny:<task>, a model under the model roots, or a checkpoint directory of a job",
    )  # fmt: skip
    job_id: str | None = Field(
        None, min_length=1, max_length=96, description="every checkpoint of this job"
    )
    data: list[Annotated[str, Field(min_length=1, max_length=1024)]] = Field(
        default_factory=list, max_length=MAX_EVAL_SETS,
        description="eval set sources; default: the job's own eval sets",
    )  # fmt: skip
    samples: int = Field(1, ge=1, le=MAX_EVAL_SAMPLES)
    k: list[int] = Field(default_factory=lambda: [1, 8], min_length=1, max_length=8)
    temperature: float = Field(1.0, gt=0, le=10)
    max_new_tokens: int | None = Field(None, ge=1, le=32768)

    @field_validator("model", "job_id", "data")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        return no_nul(value)

    @model_validator(mode="after")
    def _one_target(self) -> EvalRequest:
        if (self.model is None) == (self.job_id is None):
            raise ValueError("give exactly one of model (a model or checkpoint) and job_id")
        return self


class EvalOut(BaseModel):
    id: str
    status: str
    progress: float
    message: str
    created_at: float
    finished_at: float | None
    error: str | None
    targets: list[dict[str, Any]]
    sets: dict[str, str]
    results: list[dict[str, Any]]

    @classmethod
    def of(cls, e: EvalRecord) -> EvalOut:
        return cls(
            id=e.id, status=e.status, progress=e.progress, message=e.message,
            created_at=e.created_at, finished_at=e.finished_at, error=e.error,
            targets=e.request.get("targets", []),
            sets=e.request.get("sets", {}),
            results=e.results,
        )  # fmt: skip


class EvalList(BaseModel):
    evals: list[EvalOut]


def _evals(request: Request) -> EvalStore:
    """The eval table and its runner, made on first use beside the job store."""
    state = request.app.state
    if getattr(state, "evals", None) is None:
        store = EvalStore(state.store.engine)
        state.eval_runner = EvalRunner(store, state.store.url)
        state.evals = store
    return state.evals


def _error(loc: tuple, msg: str) -> dict[str, Any]:
    return {"loc": ["body", *loc], "msg": msg, "type": "value_error"}


def _under(path: Path, roots: list[Path]) -> bool:
    return any(path.is_relative_to(r.expanduser().resolve()) for r in roots)


def _plan(body: EvalRequest, store: Any, settings: Any, user: Any) -> dict[str, Any]:
    """The stored request: targets and the eval-only job spec, checked like a job's
    (verifiers, data roots, every row; model roots, or a job's run directory)."""
    from rlvr.api.validation import check_spec
    from rlvr.train.evaluate import EvalTarget, eval_sets, eval_spec, eval_targets

    base, targets, errors = None, [], []
    if body.job_id is not None:
        job = store.get_job(body.job_id)
        if job is None or not (user.admin or getattr(job, "owner", "admin") == user.user):
            raise RequestValidationError([_error(("job_id",), f"no job {body.job_id!r}")])
        base = JobSpec.model_validate(job.spec)
        targets = eval_targets(job.run_dir)
        if len(targets) < 2:
            errors.append(_error(("job_id",), f"job {job.id} has no checkpoint yet"))
    else:
        assert body.model is not None  # EvalRequest: exactly one of model and job_id
        raw = Path(body.model).expanduser()
        runs = Path(settings.runs_dir).expanduser().resolve()
        if raw.is_absolute() and _under(raw.resolve(), [runs]):  # a checkpoint of a job
            if not (raw.resolve() / "config.json").is_file():
                errors.append(_error(("model",), f"{body.model!r} is not a checkpoint directory"))
            targets = [EvalTarget(body.model, str(raw.resolve()))]
    if not body.data and (base is None or not (base.eval.sets or base.data.eval)):
        errors.append(_error(("data",), "give at least one eval set source"))
    if errors:
        raise RequestValidationError(errors)
    try:
        spec = eval_spec(
            body.data, base, samples=body.samples, k=body.k,
            temperature=body.temperature, max_new_tokens=body.max_new_tokens,
        )  # fmt: skip
    except ValidationError as exc:
        raise RequestValidationError(
            [_error(tuple(e["loc"]), e["msg"]) for e in exc.errors(include_url=False)]
        ) from None
    if body.model is not None and not targets:
        spec = spec.model_copy(update={"model": spec.model.model_copy(update={"path": body.model})})
    spec, problems = check_spec(spec, settings)
    problems = [p for p in problems if not (targets and p["loc"][1:2] == ["model"])]
    for p in problems:  # name the request's fields, not the inner spec's
        p["loc"] = ["body", "model" if p["loc"][1:2] == ["model"] else "data", *p["loc"][1:]]
    if problems:
        raise RequestValidationError(problems)
    if not targets:
        assert body.model is not None  # a job_id without two checkpoints was refused above
        targets = [EvalTarget(body.model, spec.model.path)]
    return {
        "targets": [t.__dict__ for t in targets],
        "job_id": body.job_id,
        "sets": eval_sets(spec),
        "spec": spec.model_dump(mode="json"),
    }


@router.post(
    "/v1/evals",
    status_code=201,
    response_model=EvalOut,
    summary="Evaluate a model, a checkpoint, or every checkpoint of a job",
    responses={422: {"description": "bad request; `detail[].loc` names the field"}},
)
async def create_eval(
    body: EvalRequest, request: Request, store: StoreDep, settings: SettingsDep, user: UserDep
) -> EvalOut:
    """Validated like a job (data rows, model roots); runs in the background (``queued``,
    ``running`` with ``progress`` 0..1 and a ``message``, then ``succeeded``/``failed``)."""
    evals = _evals(request)
    planned = await run_in_threadpool(_plan, body, store, settings, user)
    record = await run_in_threadpool(evals.create, planned, user.user)
    request.app.state.eval_runner.wake()
    return EvalOut.of(record)


@router.get("/v1/evals", response_model=EvalList, summary="Evals, newest first")
def list_evals(
    request: Request, user: UserDep, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> EvalList:
    owner = None if user.admin else user.user
    return EvalList(evals=[EvalOut.of(e) for e in _evals(request).list(limit, owner)])


@router.get("/v1/evals/{eval_id}", response_model=EvalOut, summary="One eval and its results")
def get_eval(eval_id: str, request: Request, user: UserDep) -> EvalOut:
    record = _evals(request).get(eval_id[:64])
    if record is None or not (user.admin or record.owner == user.user):
        raise HTTPException(404, detail=f"no eval {eval_id!r}")
    return EvalOut.of(record)


# -- compare -------------------------------------------------------------------------------
def _split(text: str, what: str, cap: int) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items or len(items) > cap:
        raise RequestValidationError(
            [
                {
                    "loc": ["query", what],
                    "msg": f"give 1 to {cap} comma-separated {what}",
                    "type": "value_error",
                }
            ]
        )
    return list(dict.fromkeys(items))


@router.get(
    "/v1/compare",
    summary="Curves of several jobs side by side, with their evals (JSON or CSV)",
    responses={200: {"content": {"text/csv": {}}}, 404: {"description": "no such job"}},
)
def compare(
    request: Request,
    store: StoreDep,
    user: UserDep,
    jobs: Annotated[str, Query(max_length=2000, description="comma-separated job ids")],
    metrics: Annotated[str, Query(max_length=2000)] = "eval/accuracy",
    format: Annotated[str, Query(pattern="^(json|csv)$")] = "json",
) -> Any:
    """At most 8 jobs and 8 metrics. JSON: ``{"jobs": {id: {"name", "series": {metric:
    {"steps", "values", "wall_s"}}}}, "evals": [eval results of those jobs]}``, where
    ``wall_s`` is the training time up to that step (the sum of ``time/step_s``); CSV: one
    row per (job, metric, step)."""
    job_ids = _split(jobs, "jobs", MAX_COMPARE_JOBS)
    names = _split(metrics, "metrics", MAX_COMPARE_METRICS)
    out: dict[str, Any] = {"metrics": names, "jobs": {}, "evals": []}
    for job_id in job_ids:
        job = store.get_job(job_id)
        if job is None or not (user.admin or getattr(job, "owner", "admin") == user.user):
            raise HTTPException(404, detail=f"no job {job_id!r}")
        series = store.metric_series(job_id, names=[*names, "time/step_s"])
        clock, wall = 0.0, {}
        for step, value in series.get("time/step_s", []):
            clock += value or 0.0
            wall[step] = round(clock, 3)
        out["jobs"][job_id] = {
            "name": job.name,
            "series": {
                name: {
                    "steps": [s for s, _ in pts][-MAX_COMPARE_POINTS:],
                    "values": [v for _, v in pts][-MAX_COMPARE_POINTS:],
                    "wall_s": [wall.get(s, 0.0) for s, _ in pts][-MAX_COMPARE_POINTS:],
                }
                for name, pts in series.items()
                if name in names
            },
        }
    for e in _evals(request).list(200, None if user.admin else user.user):
        if e.request.get("job_id") in job_ids:
            out["evals"] += [{"eval": e.id, "job_id": e.request["job_id"], **r} for r in e.results]
    if format == "csv":
        return PlainTextResponse(_csv(out), media_type="text/csv")
    return out


def _csv(data: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["job_id", "job_name", "metric", "step", "wall_s", "value"])
    for job_id, job in data["jobs"].items():
        for name, s in job["series"].items():
            for step, wall, value in zip(s["steps"], s["wall_s"], s["values"], strict=True):
                ok = value is not None and math.isfinite(value)
                w.writerow([job_id, job["name"], name, step, wall, value if ok else ""])
    return buf.getvalue()


MAX_PROMPT_STATS_ROWS = 20_000  # sample rows read per request


@router.get(
    "/v1/jobs/{job_id}/prompts",
    summary="Per-prompt pass rates over training, the longest-failing prompts first",
    responses={404: {"description": "no such job"}},
)
def prompt_stats(
    job: JobDep, store: StoreDep, limit: Annotated[int, Query(ge=1, le=1000)] = 50
) -> dict[str, Any]:
    """From the job's stored samples (the newest 20,000): per prompt, its samples, passes,
    pass rate, and ``failing_for`` (steps since it last passed); see
    :func:`rlvr.train.evaluate.prompt_pass_rates`."""
    from rlvr.train.evaluate import prompt_pass_rates

    rows = store.samples(job.id, limit=MAX_PROMPT_STATS_ROWS)
    stats = prompt_pass_rates(rows)
    return {"job_id": job.id, "samples": len(rows), "total": len(stats), "prompts": stats[:limit]}
