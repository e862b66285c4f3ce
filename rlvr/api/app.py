"""The FastAPI application: ``create_app(settings)``, served by ``rlvr serve`` (uvicorn).

    uvicorn --factory rlvr.api.app:create_app      # settings from the RLVR_* environment

The app owns a :class:`~rlvr.jobs.store.JobStore` (created on start, schema version checked)
and a :class:`~rlvr.jobs.runner.JobRunner` whose thread starts with the app (its first tick
reconciles the store with Ray) and stops with it.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry, Counter

import rlvr
from rlvr.api.auth import TokenTable
from rlvr.api.deps import require_token
from rlvr.api.middleware import Guard, RequestCounter
from rlvr.api.routes import evals, jobs, prometheus, system, tools, verifiers
from rlvr.api.settings import Settings
from rlvr.jobs.runner import JobRunner
from rlvr.jobs.store import JobStore

log = logging.getLogger("rlvr.api")

DESCRIPTION = """
Submit reinforcement-learning-from-verifiable-rewards training jobs and watch them learn.

A job is a `JobSpec` (JSON or YAML); each runs as one Ray job. Live data: per-step
metrics (`/metrics`), Server-Sent Events (`/events`), sampled completions with every
verifier's verdict (`/samples`), checkpoints and the driver's log. With `RLVR_API_TOKEN`
or `RLVR_TOKENS_FILE` set, every `/v1` call needs `Authorization: Bearer <token>`; a
token's user sees its own jobs, an admin's sees all.
"""


def create_app(
    settings: Settings | None = None,
    *,
    runner: JobRunner | None = None,
    start_runner: bool = True,
) -> FastAPI:
    """The rlvr service.

    Args:
        settings: default ``Settings.from_env()``.
        runner: a preconfigured runner (tests pass one with a short poll or a given head);
            default: one for ``settings.ray_address`` (or a local head it starts).
        start_runner: start the runner's thread with the app. Without it nothing reaches
            Ray: jobs stay ``queued`` (for API-only tests and tools).
    """
    settings = settings or Settings.from_env()
    tokens = TokenTable.from_settings(settings)  # a bad tokens file fails here, clearly
    if tokens.open and not settings.loopback_only:
        raise ValueError(
            f"refusing to serve on {settings.host} without a token: anyone who can reach it "
            "could run jobs. Set RLVR_API_TOKEN (or RLVR_TOKENS_FILE), or bind to 127.0.0.1"
        )
    store = JobStore(settings.db_url)  # fails here, clearly, on a schema mismatch
    runner = runner or JobRunner(
        store,
        db_url=settings.db_url,
        ray_address=settings.ray_address,
        driver_python=settings.driver_python,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if start_runner:
            runner.start()
        try:
            yield
        finally:
            await run_in_threadpool(runner.stop)
            verifiers.close_pool(app)
            store.close()

    app = FastAPI(
        title="rlvr",
        version=rlvr.__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        separate_input_output_schemas=False,  # one JobSpec schema, shared by both directions
    )
    app.state.settings = settings
    app.state.store = store
    app.state.runner = runner
    app.state.tokens = tokens
    app.state.open_streams = {}  # user -> event streams open now (quota_streams)

    registry = CollectorRegistry()
    registry.register(prometheus.JobCollector(store))
    requests = Counter(
        "rlvr_http_requests", "HTTP requests", ["method", "route", "status"], registry=registry
    )
    app.state.prometheus = registry

    # Added last = outermost: the counter sees the guard's refusals too.
    app.add_middleware(
        Guard,
        tokens=tokens,
        trusted_hosts=settings.trusted_hosts,
        max_body_bytes=settings.max_body_bytes,
    )
    app.add_middleware(RequestCounter, counter=requests)

    auth = [Depends(require_token)]
    app.include_router(jobs.router, dependencies=auth)
    app.include_router(verifiers.router, dependencies=auth)
    app.include_router(tools.router, dependencies=auth)
    app.include_router(evals.router, dependencies=auth)
    app.include_router(system.router)
    app.include_router(prometheus.router)  # /metrics, its own token check
    app.mount("/static", StaticFiles(directory=system.STATIC_DIR), name="static")
    return app
