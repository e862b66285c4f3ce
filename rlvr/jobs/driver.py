"""The entrypoint of one training job's Ray job: ``python -m rlvr.jobs.driver --job-id ID``.

The runner submits this command to Ray (one Ray job per training job). It reads the job's
validated spec from the job store (``RLVR_DB_URL``, passed in the Ray job's runtime env),
then runs :func:`rlvr.train.run`, which writes the run directory, with a sink that writes
to the store, so the API sees metrics as they happen even when this process runs on another
machine. Stopping: Ray's ``stop_job`` sends SIGTERM, and a ``cancelled`` status in the
store is noticed between steps; either one makes the loop stop at the next step boundary.

A driver never outlives its cluster: when the Ray head's GCS stops answering for
``RLVR_DRIVER_LOST_S`` seconds (default 10) the run stops at the next step boundary, and
``RLVR_DRIVER_EXIT_S`` seconds later (default 20) the process ends with its children
whatever it is doing. It then writes no status: the service decides (resume or fail).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from rlvr.config import JobSpec
from rlvr.jobs.sink import StoreSink
from rlvr.jobs.store import JobStore

log = logging.getLogger("rlvr.driver")

DRIVER_LOG = "driver.log"  # in the run dir: the log tail survives the Ray cluster


class _StopFlag:
    """Set by SIGTERM (Ray's stop_job) or by a ``cancelled`` status in the store."""

    def __init__(self, store: JobStore, job_id: str, attempt: int = 1, poll_s: float = 2.0):
        self._attempt = attempt
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
            # cancelled (or failed by the service), or queued again as a new attempt (the
            # service is stopping its head): stop at the next step, with a checkpoint
            if job is not None and (job.terminal or job.attempt != self._attempt):
                self._event.set()
        return self._event.is_set()


class _ClusterWatch(threading.Thread):
    """Checks every ``poll_s`` that the GCS at ``gcs_address`` (``host:port``) accepts a
    TCP connection. Unanswered for ``lost_after_s``: sets ``lost`` and calls ``on_lost``
    (the run stops at its next step); ``exit_after_s`` later ends this process and its
    children, since a driver whose cluster is gone may be blocked on a dead actor."""

    def __init__(
        self,
        gcs_address: str,
        on_lost: Any,
        *,
        lost_after_s: float = 10.0,
        exit_after_s: float = 20.0,
        poll_s: float = 1.0,
    ):
        super().__init__(name="rlvr-cluster-watch", daemon=True)
        host, _, port = gcs_address.rpartition(":")
        self.host, self.port = host.strip("[]") or "127.0.0.1", int(port)
        self.on_lost, self.lost_after_s = on_lost, lost_after_s
        self.exit_after_s, self.poll_s = exit_after_s, poll_s
        self.lost = threading.Event()

    def _answers(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=2.0):
                return True
        except OSError:
            return False

    def confirm(self, within_s: float = 5.0) -> bool:
        """Whether the cluster is still there, watched for ``within_s``: a run that just
        failed on dead actors may be seeing the head go down. Two unanswered checks in a
        row count as gone (``lost`` is set)."""
        misses, deadline = 0, time.monotonic() + within_s
        while not self.lost.is_set() and time.monotonic() < deadline:
            misses = 0 if self._answers() else misses + 1
            if misses >= 2:
                self.lost.set()
                break
            time.sleep(0.5)
        return not self.lost.is_set()

    def run(self) -> None:
        last_answer = time.monotonic()
        while True:
            time.sleep(self.poll_s)
            if self._answers():
                last_answer = time.monotonic()
            elif time.monotonic() - last_answer >= self.lost_after_s:
                break
        log.error(
            "the Ray cluster (GCS %s:%d) has not answered for %.0fs: stopping; this process "
            "ends in %.0fs", self.host, self.port, self.lost_after_s, self.exit_after_s,
        )  # fmt: skip
        self.lost.set()
        self.on_lost()
        time.sleep(self.exit_after_s)
        log.error("the Ray cluster is gone: ending the driver and its children now")
        _end_self_and_children()


def _end_self_and_children() -> None:
    import psutil  # a Ray dependency

    with contextlib.suppress(psutil.Error):
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.kill()
    logging.shutdown()
    os._exit(3)


def _watch_cluster(on_lost: Any) -> _ClusterWatch | None:
    """A started :class:`_ClusterWatch` for ``$RAY_ADDRESS`` (``host:port``, as Ray sets it
    for a job's driver); None when there is no such address (a driver run by hand)."""
    address = os.environ.get("RAY_ADDRESS", "")
    if "://" in address or ":" not in address or not address.rsplit(":", 1)[1].isdigit():
        return None
    watch = _ClusterWatch(
        address,
        on_lost,
        lost_after_s=float(os.environ.get("RLVR_DRIVER_LOST_S", "10")),
        exit_after_s=float(os.environ.get("RLVR_DRIVER_EXIT_S", "20")),
    )
    watch.start()
    return watch


class _DriverSink(StoreSink):
    """The store sink, writing no status once the cluster is lost: the run then stops as
    ``cancelled`` or fails on dead actors, and neither is true of the job. Before a run's
    ``failed`` or ``cancelled`` is written, the cluster is watched a few seconds more."""

    def __init__(self, store: JobStore, job_id: str, *, attempt: int, watch: Any):
        super().__init__(store, job_id, attempt=attempt)
        self.watch = watch

    def cluster_lost(self) -> bool:
        return self.watch is not None and self.watch.lost.is_set()

    def status(self, status: str, *, step: int | None = None, error: str | None = None) -> None:
        if status in ("failed", "cancelled") and self.watch is not None:
            self.watch.confirm()
        if not self.cluster_lost():
            super().status(status, step=step, error=error)


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
    should_stop = _StopFlag(store, job_id, attempt)
    sigterm = threading.Event()

    def on_sigterm(*_: object) -> None:
        sigterm.set()
        should_stop.set()

    signal.signal(signal.SIGTERM, on_sigterm)
    watch = _watch_cluster(should_stop.set)
    store_sink = _DriverSink(store, job_id, attempt=attempt, watch=watch)

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
        # A stop asked for (SIGTERM, a cancel, a new attempt) that broke the run is a cancel.
        # Not the stop flag itself: the loop's own `failed`, written before it raised, makes
        # the job terminal, which the flag reads as a stop.
        now = store.get_job(job_id)
        stopped = (
            isinstance(exc, KeyboardInterrupt)
            or sigterm.is_set()
            or (now is not None and (now.status == "cancelled" or now.attempt != attempt))
        )
        if store_sink.cluster_lost():
            return 3  # the cluster is gone: the service resumes or fails the job
        if stopped:
            store_sink.status("cancelled")
            return 0
        store_sink.status("failed", error=f"{type(exc).__name__}: {exc}\n\n{tb[-8000:]}")
        return 1
    if store_sink.cluster_lost():
        log.info("job %s stopped (%s): its Ray cluster is gone", job_id, summary)
        return 3  # stopped by the lost cluster, not a cancel: the service resumes it
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
