"""Eval-only jobs of the service: their table, the process that runs one, and its runner.

``POST /v1/evals`` stores a request (``queued``); :class:`EvalRunner` starts at most
``max_running`` of them at a time as ``python -m rlvr.jobs.evals --eval-id ID`` (a process
of its own, the database URL in ``RLVR_EVAL_DB_URL`` rather than on its command line; killed
past ``timeout_s`` and with the service), which evaluates each target (a model, or every
checkpoint of a job: an eval-vs-step curve) with :func:`rlvr.train.evaluate.evaluate_model`
and writes its progress and results back here. The table lives beside the job store's on
the same database, created on first use; evals a previous service left running fail.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Float, String, Text, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

log = logging.getLogger("rlvr.evals")

EVAL_STATUSES = ("queued", "running", "succeeded", "failed")
DB_URL_ENV = "RLVR_EVAL_DB_URL"  # how the runner hands an eval process the database


class _Base(DeclarativeBase):
    pass


class _Eval(_Base):
    __tablename__ = "evals"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), default="admin")
    status: Mapped[str] = mapped_column(String(16), index=True)
    request_json: Mapped[str] = mapped_column(Text)  # targets and the eval-only job spec
    created_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)  # 0..1
    message: Mapped[str] = mapped_column(Text, default="")
    results_json: Mapped[str] = mapped_column(Text, default="[]")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


@dataclass
class EvalRecord:
    id: str
    owner: str
    status: str
    request: dict[str, Any]
    created_at: float
    finished_at: float | None
    progress: float
    message: str
    results: list[dict[str, Any]]
    error: str | None


def _record(row: _Eval) -> EvalRecord:
    return EvalRecord(
        id=row.id,
        owner=row.owner,
        status=row.status,
        request=json.loads(row.request_json),
        created_at=row.created_at,
        finished_at=row.finished_at,
        progress=row.progress or 0.0,
        message=row.message or "",
        results=json.loads(row.results_json or "[]"),
        error=row.error,
    )


class EvalStore:
    """The ``evals`` table on ``engine`` (the job store's), created if missing."""

    def __init__(self, engine: Engine):
        self.engine = engine
        _Base.metadata.create_all(engine)
        self._session = sessionmaker(engine, expire_on_commit=False)

    def create(self, request: dict[str, Any], owner: str = "admin") -> EvalRecord:
        row = _Eval(
            id=f"eval-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}",
            owner=owner,
            status="queued",
            request_json=json.dumps(request),
            created_at=time.time(),
            progress=0.0,
            message="queued",
            results_json="[]",
        )
        with self._session.begin() as s:
            s.add(row)
        return _record(row)

    def get(self, eval_id: str) -> EvalRecord | None:
        with self._session() as s:
            row = s.get(_Eval, eval_id.replace("\x00", ""))
            return _record(row) if row else None

    def list(self, limit: int = 50, owner: str | None = None) -> list[EvalRecord]:
        query = select(_Eval).order_by(_Eval.created_at.desc()).limit(limit)
        if owner is not None:
            query = query.where(_Eval.owner == owner)
        with self._session() as s:
            return [_record(r) for r in s.scalars(query)]

    def update(self, eval_id: str, **values: Any) -> None:
        if "results" in values:
            values["results_json"] = json.dumps(values.pop("results"), allow_nan=False)
        with self._session.begin() as s:
            s.execute(update(_Eval).where(_Eval.id == eval_id).values(**values))

    def finish(self, eval_id: str, status: str, error: str | None = None) -> None:
        self.update(
            eval_id, status=status, error=error, finished_at=time.time(), message=status,
            **({"progress": 1.0} if status == "succeeded" else {}),
        )  # fmt: skip


def _finite(metrics: dict[str, float]) -> dict[str, float | None]:
    return {k: (v if v == v and abs(v) != float("inf") else None) for k, v in metrics.items()}


def run_eval(store: EvalStore, eval_id: str) -> None:
    """Run one stored eval in this process (Ray: ``$RAY_ADDRESS``, else a local cluster)."""
    import ray

    from rlvr.config import JobSpec
    from rlvr.train.evaluate import EvalTarget, evaluate_model

    record = store.get(eval_id)
    if record is None:
        raise SystemExit(f"no eval {eval_id!r}")
    spec = JobSpec.model_validate(record.request["spec"])
    targets = [EvalTarget(**t) for t in record.request["targets"]]
    store.update(eval_id, status="running", message="starting Ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = os.environ.get("RAY_ADDRESS")
    ray.init(log_to_driver=False, **({"address": address} if address else {"num_cpus": 2}))
    results: list[dict[str, Any]] = []
    try:
        for i, target in enumerate(targets):

            def progress(name: str, j: int, n: int, i: int = i, label: str = target.label) -> None:
                store.update(
                    eval_id,
                    progress=(i + j / n) / len(targets),
                    message=f"{label}: {name} ({j + 1}/{n} sets, model {i + 1}/{len(targets)})",
                )

            metrics, _ = evaluate_model(spec, target.model, progress=progress, actor_cpus=0)
            results.append(
                {"model": target.label, "step": target.step, "metrics": _finite(metrics)}
            )
            store.update(eval_id, results=results, progress=(i + 1) / len(targets))
        store.finish(eval_id, "succeeded")
    except BaseException as exc:
        store.finish(eval_id, "failed", error=f"{type(exc).__name__}: {exc}"[:4000])
        raise
    finally:
        ray.shutdown()


class EvalRunner:
    """Starts queued evals as processes, ``max_running`` at a time; a process past
    ``timeout_s`` is killed and its eval failed. One daemon thread, polling every second."""

    def __init__(
        self, store: EvalStore, db_url: str, max_running: int = 1, timeout_s: float = 7200
    ):
        self.store, self.db_url = store, db_url
        self.max_running, self.timeout_s = max_running, timeout_s
        self._procs: dict[str, tuple[subprocess.Popen, float]] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        for e in store.list(limit=500):  # left running by a previous service: it is gone
            if e.status == "running":
                store.finish(e.id, "failed", error="interrupted: the service restarted")
        self._thread = threading.Thread(target=self._loop, name="rlvr-evals", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for proc, _ in self._procs.values():
            proc.kill()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # the next tick tries again; the service goes on
                log.exception("eval runner tick failed")
            self._wake.wait(1.0)
            self._wake.clear()

    def tick(self) -> None:
        for eval_id, (proc, started) in list(self._procs.items()):
            if proc.poll() is None and time.monotonic() - started < self.timeout_s:
                continue
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
                self.store.finish(
                    eval_id, "failed", error=f"timed out after {self.timeout_s:.0f} s"
                )
            elif (rec := self.store.get(eval_id)) is not None and rec.status in (
                "queued",
                "running",
            ):
                self.store.finish(
                    eval_id, "failed", error=f"eval process exited with {proc.returncode}"
                )
            del self._procs[eval_id]
        queued = [e for e in reversed(self.store.list(limit=500)) if e.status == "queued"]
        for record in queued[: max(0, self.max_running - len(self._procs))]:
            self._start(record.id)

    def _start(self, eval_id: str) -> None:
        from rlvr.jobs.runner import _die_with_parent

        self.store.update(eval_id, status="running", message="starting")
        cmd = [sys.executable, "-m", "rlvr.jobs.evals", "--eval-id", eval_id]
        proc = subprocess.Popen(
            cmd,
            env={**os.environ, DB_URL_ENV: self.db_url},  # credentials stay off the command line
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        self._procs[eval_id] = (proc, time.monotonic())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="run one stored eval (the service starts this)")
    parser.add_argument("--eval-id", required=True)
    args = parser.parse_args(argv)
    from rlvr.jobs.store import make_engine

    run_eval(EvalStore(make_engine(os.environ[DB_URL_ENV])), args.eval_id)


if __name__ == "__main__":
    main()
