"""``GET /metrics``: the service in Prometheus text format, read from the job store at scrape time.

Series (deploy/grafana/rlvr-dashboard.json charts them):

- ``rlvr_jobs{status}``: jobs by status; ``rlvr_queue_length``: queued jobs not yet handed to Ray;
- per job, labelled ``{job, name, owner}``: ``rlvr_job_step``, ``rlvr_job_running`` (1/0),
  ``rlvr_job_reward_mean``, ``rlvr_job_accuracy``, ``rlvr_job_rollout_tokens_per_second``,
  ``rlvr_job_learn_tokens_per_second`` (the newest value of ``reward/mean``, ``accuracy``,
  ``throughput/rollout_tok_s``, ``throughput/learn_tok_s``);
- ``rlvr_http_requests_total{method, route, status}`` (:class:`rlvr.api.middleware.RequestCounter`).

The label set is bounded whatever callers submit: per-job series exist for at most
``MAX_RUNNING`` running jobs and ``MAX_RECENT`` jobs that finished in the last
``RECENT_S`` seconds (so their last values are scraped once), label values are cut to
``MAX_LABEL`` characters, and the client library escapes them.

Who may scrape: with tokens on (``RLVR_API_TOKEN`` / ``RLVR_TOKENS_FILE``), a bearer token of
an admin or ``RLVR_METRICS_TOKEN``, a token that opens ``/metrics`` and nothing else (the
per-job labels name every user's jobs). With ``RLVR_METRICS_TOKEN`` set, ``/metrics`` needs a
token even on an open (loopback) service.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

from fastapi import APIRouter, HTTPException, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from rlvr.api.auth import TokenTable
from rlvr.jobs.store import TERMINAL, JobRecord, JobStore

router = APIRouter(tags=["system"])

MAX_RUNNING = 100
MAX_RECENT = 20
RECENT_S = 600.0
MAX_LABEL = 64
LABELS = ["job", "name", "owner"]
# gauge name -> (metric name in the store, help)
JOB_VALUES = {
    "rlvr_job_reward_mean": ("reward/mean", "reward/mean at the job's newest step"),
    "rlvr_job_accuracy": ("accuracy", "accuracy (sampled) at the job's newest step"),
    "rlvr_job_rollout_tokens_per_second": (
        "throughput/rollout_tok_s",
        "generated tokens per rollout second, newest step",
    ),
    "rlvr_job_learn_tokens_per_second": (
        "throughput/learn_tok_s",
        "learner tokens per learn second, newest step",
    ),
}


def _label(value: str) -> str:
    return value[:MAX_LABEL]


def scraped_jobs(store: JobStore, now: float | None = None) -> list[JobRecord]:
    """The jobs that get per-job series: running ones (newest ``MAX_RUNNING``) and those
    finished within ``RECENT_S`` (newest ``MAX_RECENT``)."""
    now = time.time() if now is None else now
    running, _ = store.list_jobs(status="running", limit=MAX_RUNNING)
    recent: list[JobRecord] = []
    for status in sorted(TERMINAL):
        done, _ = store.list_jobs(status=status, limit=MAX_RECENT)
        recent += [j for j in done if j.finished_at is not None and now - j.finished_at < RECENT_S]
    recent.sort(key=lambda j: j.finished_at or 0.0, reverse=True)
    return running + recent[:MAX_RECENT]


class JobCollector:
    """Prometheus gauges read from the store at scrape time (the drivers write elsewhere)."""

    def __init__(self, store: JobStore):
        self.store = store

    def collect(self) -> Iterator[Metric]:
        by_status = GaugeMetricFamily("rlvr_jobs", "Jobs by status", labels=["status"])
        for status, n in self.store.count_by_status().items():
            by_status.add_metric([status], n)
        yield by_status
        yield GaugeMetricFamily(
            "rlvr_queue_length",
            "Queued jobs not yet handed to Ray",
            value=len(self.store.queue_positions()),
        )
        step = GaugeMetricFamily("rlvr_job_step", "Newest step of the job", labels=LABELS)
        running = GaugeMetricFamily("rlvr_job_running", "1 while the job runs", labels=LABELS)
        values = {
            gauge: GaugeMetricFamily(gauge, help_text, labels=LABELS)
            for gauge, (_, help_text) in JOB_VALUES.items()
        }
        for job in scraped_jobs(self.store):
            labels = [_label(job.id), _label(job.name), _label(job.owner)]
            step.add_metric(labels, job.step)
            running.add_metric(labels, 1 if job.status == "running" else 0)
            latest = self.store.latest_metrics(job.id)
            for gauge, (name, _) in JOB_VALUES.items():
                value = latest.get(name)
                if value is not None:
                    values[gauge].add_metric(labels, value)
        yield step
        yield running
        yield from values.values()


def _may_scrape(request: Request) -> bool:
    tokens: TokenTable = request.app.state.tokens
    metrics_token: str | None = request.app.state.settings.metrics_token
    if tokens.open and not metrics_token:
        return True  # an open service (loopback only: `rlvr serve` refuses otherwise)
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return False
    if metrics_token and secrets.compare_digest(token.encode(), metrics_token.encode()):
        return True
    principal = tokens.lookup(token)
    return principal is not None and principal.admin


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}},
        401: {"description": "tokens are on: RLVR_METRICS_TOKEN or an admin token is needed"},
    },
)
def prometheus_metrics(request: Request) -> Response:
    """Prometheus text format: jobs by status, queue length, per-job step, reward, accuracy and
    tokens/s (running and recently finished jobs), HTTP requests by route and status."""
    if not _may_scrape(request):
        raise HTTPException(
            status_code=401,
            detail="/metrics needs 'Authorization: Bearer <token>': RLVR_METRICS_TOKEN "
            "or an admin's token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return Response(generate_latest(request.app.state.prometheus), media_type=CONTENT_TYPE_LATEST)
