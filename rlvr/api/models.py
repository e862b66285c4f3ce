"""Request and response bodies of the REST API (what ``/openapi.json`` documents)."""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rlvr.config import JobSpec
from rlvr.jobs.store import JobRecord, JobStatus


class JobCreated(BaseModel):
    id: str
    status: JobStatus


class JobSummary(BaseModel):
    """One row of the jobs table."""

    id: str
    name: str
    status: JobStatus
    step: int = Field(description="the newest step with metrics")
    max_steps: int
    created_at: float = Field(description="unix seconds")
    updated_at: float
    started_at: float | None
    finished_at: float | None
    age_s: float = Field(description="seconds since submission")
    reward_mean: float | None = Field(description="reward/mean at the newest step")
    accuracy: float | None
    eval_accuracy: float | None
    error: str | None
    owner: str = Field("admin", description="the user who submitted it")
    priority: int = Field(0, description="higher is admitted to the cluster first")
    queue_position: int | None = Field(
        None, description="1 = admitted next; null once handed to the cluster"
    )

    @classmethod
    def of(
        cls, job: JobRecord, latest: dict[str, float | None], queue_position: int | None = None
    ) -> JobSummary:
        return cls(
            id=job.id,
            name=job.name,
            status=job.status,
            owner=job.owner,
            priority=job.priority,
            queue_position=queue_position,
            step=job.step,
            max_steps=int(job.spec.get("algorithm", {}).get("max_steps", 0)),
            created_at=job.created_at,
            updated_at=job.updated_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            age_s=max(0.0, time.time() - job.created_at),
            reward_mean=latest.get("reward/mean"),
            accuracy=latest.get("accuracy"),
            eval_accuracy=latest.get("eval/accuracy"),
            error=job.error,
        )


class JobDetail(JobSummary):
    """A job with its spec, latest metrics and Ray bookkeeping."""

    spec: JobSpec
    latest_metrics: dict[str, float | None]
    attempt: int = Field(description="1, then +1 per resume")
    submission_id: str | None = Field(description="the Ray job's submission id")
    ray_status: str | None
    run_dir: str
    last_event_id: int = Field(description="resume the event stream after this id")


class JobList(BaseModel):
    jobs: list[JobSummary]
    total: int
    limit: int
    offset: int


class Series(BaseModel):
    """One metric over steps; ``values[i]`` belongs to ``steps[i]`` (null: NaN/inf)."""

    steps: list[int]
    values: list[float | None]


class MetricsOut(BaseModel):
    job_id: str
    series: dict[str, Series]


class VerdictOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    score: float | None = None
    passed: bool | None = None
    reason: str = ""
    details: dict[str, Any] = {}


class SampleOut(BaseModel):
    """One completion with its reward; the think block and the answer apart."""

    model_config = ConfigDict(extra="allow")
    step: int
    prompt: str = ""
    completion: str = ""
    think: str | None = None
    answer: str = ""
    reference: Any = None
    reward: float | None = None
    passed: bool | None = None
    verdicts: dict[str, VerdictOut] = {}


class SampleList(BaseModel):
    job_id: str
    samples: list[SampleOut]


class CheckpointOut(BaseModel):
    step: int
    path: str = Field(description="an HF-format model directory")
    created_at: float


class CheckpointList(BaseModel):
    job_id: str
    checkpoints: list[CheckpointOut]


class LogsOut(BaseModel):
    job_id: str
    source: Literal["ray", "file", "none"]
    text: str


class VerifierOut(BaseModel):
    name: str
    description: str
    reference_format: str


class VerifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    verifier: str = Field(..., min_length=1, max_length=200, examples=["math"])
    completion: str = Field(..., max_length=1_000_000, examples=["<think>2+2</think> 4"])
    reference: Any = Field(..., examples=["4"])
    options: dict[str, Any] = Field(
        {}, description="the verifier's options (GET /v1/verifiers); limits: docs/api.md"
    )


def nesting_depth(value: Any) -> int:
    """How deeply lists/dicts nest in ``value`` (without recursion: any depth is safe)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list | tuple):
            deepest = max(deepest, depth)
            stack.extend(
                (v, depth + 1) for v in (item.values() if isinstance(item, dict) else item)
            )
    return deepest


class ExampleSpec(BaseModel):
    name: str
    yaml: str


class RayHealth(BaseModel):
    address: str | None
    owned: bool
    connected: bool
    error: str | None


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    jobs: dict[str, int]
    ray: RayHealth


class ErrorOut(BaseModel):
    detail: str
