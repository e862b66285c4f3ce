"""The entrypoint of one training job's Ray job: ``python -m rlvr.jobs.driver --job-id ID``.

The runner submits this command to Ray (one Ray job per training job). It reads the job's
validated spec from the job store (``RLVR_DB_URL``, passed in the Ray job's runtime env),
then runs :func:`rlvr.train.run`, which writes the run directory, with a sink that writes
to the store, so the API sees metrics as they happen even when this process runs on another
machine. Stopping: Ray's ``stop_job`` sends SIGTERM, and a ``cancelled`` status in the
store is noticed between steps; either one makes the loop stop at the next step boundary.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from rlvr.config import JobSpec
from rlvr.jobs.sink import StoreSink
from rlvr.jobs.store import JobStore

log = logging.getLogger("rlvr.driver")

DRIVER_LOG = "driver.log"  # in the run dir: the log tail survives the Ray cluster


class _StopFlag:
    """Set by SIGTERM (Ray's stop_job) or by a ``cancelled`` status in the store."""

    def __init__(self, store: JobStore, job_id: str, poll_s: float = 2.0):
        self._event = threading.Event()
        self._store = store
        self._job_id = job_id
        self._poll_s = poll_s
        self._last_poll = 0.0

    def set(self, *_: object) -> None:
        self._event.set()

    def __call__(self) -> bool:
        if self._event.is_set():
            return True
        now = time.monotonic()
        if now - self._last_poll >= self._poll_s:  # at most one query per poll_s
            self._last_poll = now
            try:
                job = self._store.get_job(self._job_id)
            except Exception as exc:  # a flaky database must not kill the run
                log.warning("could not read the job's status: %s", exc)
                job = None
            if job is not None and job.status == "cancelled":
                self._event.set()
        return self._event.is_set()


def _setup_logging(run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers: list[logging.Handler] = [
        logging.StreamHandler(sys.stdout),
        logging.FileHandler(run_dir / DRIVER_LOG),
    ]
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for h in handlers:
        h.setFormatter(fmt)
        root.addHandler(h)


def drive(job_id: str, *, db_url: str, attempt: int = 1, resume: bool = False) -> int:
    """Run one attempt of a stored job to its end; returns the process exit code."""
    store = JobStore(db_url)
    job = store.get_job(job_id)
    if job is None:
        print(f"rlvr driver: no job {job_id!r} in the job store", file=sys.stderr)
        return 2
    run_dir = Path(job.run_dir)
    _setup_logging(run_dir)
    # rlvr.train.run writes the run dir itself; this sink adds the job store.
    store_sink = StoreSink(store, job_id, attempt=attempt)
    should_stop = _StopFlag(store, job_id)
    signal.signal(signal.SIGTERM, should_stop.set)

    log.info(
        "job %s attempt %d%s: run dir %s", job_id, attempt, " (resume)" if resume else "", run_dir
    )
    store_sink.status("running")
    try:
        spec = JobSpec.model_validate(job.spec)
        from rlvr.train import run  # heavy (torch, Ray): after the cheap checks

        summary = run(
            spec,
            run_dir,
            sink=store_sink,
            resume=resume,
            ray_address=os.environ.get("RAY_ADDRESS"),
            should_stop=should_stop,
        )
    except BaseException as exc:  # every failure must reach the store
        tb = traceback.format_exc()
        log.error("job %s failed:\n%s", job_id, tb)
        stopped = should_stop() or isinstance(exc, KeyboardInterrupt)
        if stopped:
            store_sink.status("cancelled")
            return 0
        store_sink.status("failed", error=f"{type(exc).__name__}: {exc}\n\n{tb[-8000:]}")
        return 1
    final = "cancelled" if should_stop() else "succeeded"
    log.info("job %s %s: %s", job_id, final, summary)
    store_sink.status(final, step=getattr(summary, "step", None) or getattr(summary, "steps", None))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rlvr.jobs.driver", description="Run one stored training job."
    )
    parser.add_argument("--job-id", required=True)
    parser.add_argument("--attempt", type=int, default=1)
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument(
        "--db-url", default=os.environ.get("RLVR_DB_URL"), help="default: $RLVR_DB_URL"
    )
    args = parser.parse_args(argv)
    if not args.db_url:
        parser.error("no job store: pass --db-url or set RLVR_DB_URL")
    return drive(args.job_id, db_url=args.db_url, attempt=args.attempt, resume=args.resume)


if __name__ == "__main__":
    sys.exit(main())
