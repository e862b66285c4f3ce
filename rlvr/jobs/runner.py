"""The job runner: one Ray job per training job, through Ray's Jobs API.

The API only writes jobs into the store (``queued``); this runner's background thread
does everything that talks to Ray, once a second while there is work:

1. reconcile: every job that may still run in Ray is compared with ``list_jobs()``: Ray's
   terminal states are copied into the store when the driver could not write them (killed,
   out of memory), a ``cancelled`` job's driver that has not stopped by itself within
   ``stop_grace_s`` is stopped with ``stop_job``, and a job Ray has never heard of (the
   cluster was restarted) is queued to resume from its last checkpoint (or, with
   ``RLVR_AUTO_RESUME=0``, marked failed as an orphan);
2. admit: queued jobs, higher ``priority`` first and then oldest first, are submitted as
   ``python -m rlvr.jobs.driver --job-id ID`` (submission id = job id; a resume is
   ``ID-r<attempt>``, since Ray never reuses a submission id) while their needs
   (:func:`job_needs`) fit the cluster's resources left by the jobs already in Ray.

Because both work from the store alone, a service restart loses nothing: the first tick
after start is the reconciliation. With an external cluster the jobs keep running while
the service is away and are adopted again; an owned head goes down with the service,
whose jobs are first stopped through the Jobs API (they checkpoint) and queued to resume.

The cluster is ``RAY_ADDRESS`` when set (Ray client ``ray://`` addresses are not the
Jobs API: give the dashboard's ``http://host:8265``), else a local head that the runner
starts on first need (``ray start --head --block``, loopback only, token auth on) and
stops with the service. Every HTTP call to Ray has a timeout.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlvr.config import JobSpec
from rlvr.jobs.store import JobRecord, JobStore
from rlvr.net import free_port

log = logging.getLogger("rlvr.runner")

_RAY_ACTIVE = ("PENDING", "RUNNING")
_RAY_TO_STATUS = {"SUCCEEDED": "succeeded", "FAILED": "failed", "STOPPED": "cancelled"}


def _transient(exc: Exception) -> bool:
    """A Ray error worth retrying: no answer, or a 5xx ("No available agent ... try again")."""
    import requests

    text = str(exc)
    return (
        isinstance(exc, requests.RequestException) or "status code 5" in text or "try again" in text
    )


class RayUnavailableError(RuntimeError):
    """The Ray cluster cannot be reached (or the local head would not start)."""


def _job_client_class():
    """``JobSubmissionClient`` with a timeout on every request (it has none of its own)."""
    from ray.job_submission import JobSubmissionClient

    class _TimedJobSubmissionClient(JobSubmissionClient):
        def __init__(self, address: str, *, timeout_s: float, headers: dict[str, str]):
            self._timeout_s = timeout_s  # before super(): its __init__ already calls Ray
            super().__init__(address, headers=headers)

        def _do_request(self, method, endpoint, **kwargs):
            kwargs.setdefault("timeout", self._timeout_s)
            return super()._do_request(method, endpoint, **kwargs)

    return _TimedJobSubmissionClient


def ray_token_from_env() -> str | None:
    """Ray's own token lookup order: ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``,
    ``~/.ray/auth_token``."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    for path in (os.environ.get("RAY_AUTH_TOKEN_PATH"), Path.home() / ".ray" / "auth_token"):
        if path and Path(path).is_file():
            return Path(path).read_text().strip() or None
    return None


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the service dies, even by SIGKILL, so a
    crashed service never leaves its Ray head behind (Linux's PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


HEAD_MARK_ENV = "RLVR_RAY_HEAD"  # set to the head's directory in everything it starts


class LocalRayHead:
    """A single-node Ray cluster on 127.0.0.1 that this process starts and stops.

    ``ray start --head --block`` runs in a session of its own, with ``RLVR_RAY_HEAD`` set to
    the head's directory: every process it starts inherits that, job drivers included,
    although Ray runs each driver in a session of its own. Stopping signals all of them
    (found in the whole process table, :func:`head_processes`), SIGTERM then SIGKILL.
    Never ``ray stop``: that kills every Ray on the machine. Token auth is on, with a
    fresh token in a 0600 file that only this head uses.
    """

    def __init__(
        self,
        *,
        num_cpus: int | None = None,
        object_store_mb: int | None = None,
        start_timeout_s: float = 180.0,
    ):
        self.num_cpus = num_cpus
        self.object_store_mb = object_store_mb
        self.start_timeout_s = start_timeout_s
        self.address: str | None = None  # the dashboard / Jobs API, http://127.0.0.1:PORT
        self.gcs_address: str | None = None
        self.token: str | None = None
        self._proc: subprocess.Popen | None = None
        self._dir: Path | None = None
        self.mark: str | None = None  # the head's directory: RLVR_RAY_HEAD of its processes
        self._guard: subprocess.Popen | None = None  # see guard_head

    def start(self) -> str:
        """Start the head and wait until its Jobs API answers; returns its address."""
        if self._proc is not None:
            return self.address or ""
        # Short path: Ray's unix sockets live under the temp dir (108-byte limit).
        self._dir = Path(tempfile.mkdtemp(prefix="rlvr-ray-", dir="/tmp"))
        self.mark = str(self._dir)
        self.token = secrets.token_hex(32)
        token_file = self._dir / "auth_token"
        token_file.write_text(self.token)
        token_file.chmod(0o600)
        gcs_port, dash_port = free_port(), free_port()
        ray_bin = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
        cmd = [
            ray_bin, "start", "--head", "--block",
            "--node-ip-address", "127.0.0.1",
            "--port", str(gcs_port),
            "--dashboard-host", "127.0.0.1",
            "--dashboard-port", str(dash_port),
            "--include-dashboard", "true",
            "--temp-dir", str(self._dir / "t"),
            "--disable-usage-stats",
            # Ray's fixed defaults (agent 52365, client 10001) would collide with any other
            # Ray on this machine, leaving the Jobs API without an agent: take free ports.
            "--dashboard-agent-listen-port", str(free_port()),
            "--dashboard-agent-grpc-port", str(free_port()),
            "--runtime-env-agent-port", str(free_port()),
            "--metrics-export-port", str(free_port()),
            "--ray-client-server-port", str(free_port()),
        ]  # fmt: skip
        if self.num_cpus is not None:
            cmd += ["--num-cpus", str(self.num_cpus)]
        if self.object_store_mb is not None:
            cmd += ["--object-store-memory", str(self.object_store_mb * 1024 * 1024)]
        env = dict(os.environ)
        env.pop("RAY_ADDRESS", None)
        env.update(
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN_PATH=str(token_file),
            RAY_USAGE_STATS_ENABLED="0",
            **{HEAD_MARK_ENV: self.mark},
            # Job drivers find `python` and `rlvr` first in this interpreter's bin dir.
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        )
        env.pop("RAY_AUTH_TOKEN", None)
        log_file = open(self._dir / "ray-start.log", "wb")  # noqa: SIM115 - lives with the head
        self._proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self.gcs_address = f"127.0.0.1:{gcs_port}"
        self.address = f"http://127.0.0.1:{dash_port}"
        guard = "import sys; from rlvr.jobs.runner import guard_head; guard_head(*sys.argv[1:])"
        self._guard = subprocess.Popen(
            [sys.executable, "-c", guard, self.mark, str(os.getpid()), str(self._proc.pid)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            start_new_session=True,
        )
        self._wait_ready()
        log.info("started a local Ray head: %s (Jobs API %s)", self.gcs_address, self.address)
        return self.address

    def _wait_ready(self) -> None:
        import httpx

        deadline = time.monotonic() + self.start_timeout_s
        headers = {"Authorization": f"Bearer {self.token}"}
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                tail = self.log_tail()
                self.stop()
                raise RayUnavailableError(f"`ray start --head` exited early:\n{tail}")
            try:
                r = httpx.get(f"{self.address}/api/version", headers=headers, timeout=2.0)
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        tail = self.log_tail()
        self.stop()
        raise RayUnavailableError(
            f"the local Ray head did not answer within {self.start_timeout_s:.0f}s:\n{tail}"
        )

    def log_tail(self, n: int = 2000) -> str:
        path = self._dir / "ray-start.log" if self._dir else None
        return path.read_text(errors="replace")[-n:] if path and path.exists() else ""

    def alive(self) -> bool:
        """Whether ``ray start --block`` still runs (it exits when the head goes down)."""
        return self._proc is not None and self._proc.poll() is None

    def processes(self) -> list[Any]:
        """Every live process of this head and its jobs (``psutil.Process``)."""
        return head_processes(self.mark) if self.mark else []

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM to the head's process group and to every other process it started (job
        drivers and their children run in sessions of their own), SIGKILL to whatever is
        left after ``timeout_s``; returns once they are all gone (at most ~10 s more)."""
        proc, self._proc = self._proc, None
        if proc is not None or self.mark:
            for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
                if proc is not None:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(proc.pid, sig)
                for p in self.processes():
                    with contextlib.suppress(Exception):
                        p.send_signal(sig)
                deadline = time.monotonic() + wait_s
                while time.monotonic() < deadline and (
                    (proc is not None and live_group_members(proc.pid)) or self.processes()
                ):
                    time.sleep(0.2)
            if proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
        guard, self._guard = self._guard, None
        if guard is not None:  # its work is done
            guard.kill()
            guard.wait(timeout=10)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        self.mark = None


def guard_head(mark: str, service_pid: str, head_pid: str) -> None:
    """A head's guard, in a session of its own: once the service that owns the head is gone
    (even by SIGKILL, or while the head was still starting, when ``ray start`` may not act on
    its parent-death signal), SIGTERM every process of the head, SIGKILL what is left after
    20 s (drivers meanwhile see their GCS go and write no status), and remove its directory.
    Ends by itself once the head has been stopped normally."""
    import psutil  # a Ray dependency

    def alive(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    while alive(int(service_pid)):
        if not alive(int(head_pid)) and not head_processes(mark):
            return  # stopped by the service
        time.sleep(1.0)
    for sig, wait_s in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
        for p in head_processes(mark):
            with contextlib.suppress(Exception):
                p.send_signal(sig)
        deadline = time.monotonic() + wait_s
        while head_processes(mark) and time.monotonic() < deadline:
            time.sleep(0.5)
    shutil.rmtree(mark, ignore_errors=True)


def head_processes(mark: str) -> list[Any]:
    """Live processes (``psutil.Process``) of the local head whose directory is ``mark``:
    those with ``RLVR_RAY_HEAD=mark`` in their environment (inherited from the head) or
    ``mark`` on their command line (Ray's own, whose session directory is under it). The
    whole process table is searched: drivers run in sessions of their own."""
    import psutil  # a Ray dependency

    found = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        if p.info["pid"] == os.getpid() or p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            on_cmdline = any(mark + os.sep in arg for arg in p.info["cmdline"] or ())
            if on_cmdline or p.environ().get(HEAD_MARK_ENV) == mark:
                found.append(p)
        except psutil.Error:  # gone meanwhile, or another user's
            continue
    return found


def _driver_pids(job_id: str) -> list[int]:
    """Pids of this machine's drivers of ``job_id`` (any attempt)."""
    import psutil  # a Ray dependency

    out = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        cmdline = p.info["cmdline"] or []
        if p.info["status"] == psutil.STATUS_ZOMBIE or "rlvr.jobs.driver" not in cmdline:
            continue
        if any(a == "--job-id" and b == job_id for a, b in zip(cmdline, cmdline[1:], strict=False)):
            out.append(p.info["pid"])
    return out


def live_group_members(pgid: int) -> list[int]:
    """Pids of process group ``pgid`` that still run (zombies awaiting a reaper excluded)."""
    import psutil  # a Ray dependency

    out = []
    for p in psutil.process_iter(["pid", "status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(p.info["pid"]) == pgid:
                out.append(p.info["pid"])
        except (ProcessLookupError, psutil.Error):
            continue
    return out


GiB = 2**30


def job_needs(spec: JobSpec, cluster: Any = None) -> dict[str, float]:
    """What one job holds while it runs: the one estimate behind the admission queue.

    ``CPU``: one for the driver (which is also the learner when ``num_learners`` is 0), one
    per rollout replica and learner actor, half per reward worker. ``GPU``: the whole GPUs
    of its placement plan on ``cluster`` (:func:`rlvr.plan.make_plan`; none on a CPU
    cluster). ``memory`` (bytes): 1 GiB per driver, replica and learner, 256 MiB per reward
    worker, a floor rather than the model's size (Ray's own memory resource is no better).
    """
    processes = 1 + spec.rollout.replicas + spec.algorithm.num_learners
    workers = spec.reward.workers
    gpus = 0.0
    if cluster is not None and getattr(cluster, "gpus", 0) > 0:
        from rlvr.plan import make_plan

        gpus = float(make_plan(spec, cluster).gpu_count)
    return {
        "CPU": processes + 0.5 * workers,
        "GPU": gpus,
        "memory": processes * GiB + workers * GiB / 4,
    }


def driver_resources(spec: JobSpec, cluster_cpus: float | None) -> dict[str, float]:
    """What the submitted driver asks Ray for: no GPU ever (engines and learners get the
    GPUs through their placement groups) and the CPU share the loop leaves it beside its
    actors (``rlvr.train.loop``: ``min(1, CPUs / (replicas + learners + 1))``), so the
    driver never holds a CPU an engine or learner actor is waiting for. Unknown CPUs: 0."""
    out = {"entrypoint_num_gpus": 0.0, "entrypoint_num_cpus": 0.0}
    if cluster_cpus:
        actors = spec.rollout.replicas + max(spec.algorithm.num_learners, 1)
        out["entrypoint_num_cpus"] = math.floor(1000 * min(1.0, cluster_cpus / (actors + 1))) / 1000
    return out


@dataclass
class RayState:
    """What ``/healthz`` says about the cluster."""

    address: str | None
    owned: bool
    connected: bool
    error: str | None


class JobRunner:
    """Submits, watches, stops and resumes the store's jobs as Ray jobs.

    Args:
        store: the job store (the single source of truth).
        db_url: the store's URL as the driver must see it (passed in the runtime env).
        ray_address: the cluster's Jobs API (``http://host:8265``); ``None`` starts and
            owns a local head on first need.
        ray_token: bearer token for a token-auth cluster; default: Ray's own lookup.
        driver_python: interpreter for the driver command; default: this one for a local
            head, ``python`` on a remote cluster (its image has rlvr installed).
        poll_s: seconds between ticks while there is work.
        http_timeout_s: timeout of every Jobs API request.
        dispatch_timeout_s: a queued job that cannot be submitted (Ray down) this long fails.
        stop_grace_s: a cancelled job's driver gets this long to stop by itself (it polls the
            store and checkpoints) before ``stop_job``; also Ray's SIGTERM-to-SIGKILL wait,
            and how long stopping the owned head waits for its drivers to checkpoint.
        local_head: options for the owned head (``num_cpus``, ``object_store_mb``).
        auto_resume: when the owned head goes down (the service stops, or the head dies) or
            Ray has lost a job, queue its jobs again to resume from their last checkpoint
            instead of failing them; default ``$RLVR_AUTO_RESUME`` (on unless ``0``).
    """

    def __init__(
        self,
        store: JobStore,
        *,
        db_url: str,
        ray_address: str | None = None,
        ray_token: str | None = None,
        driver_python: str | None = None,
        poll_s: float = 1.0,
        http_timeout_s: float = 15.0,
        dispatch_timeout_s: float = 300.0,
        stop_grace_s: float = 30.0,
        local_head: dict[str, Any] | None = None,
        auto_resume: bool | None = None,
    ):
        self.store = store
        self.db_url = db_url
        self.ray_address = ray_address
        self.ray_token = ray_token if ray_token is not None else ray_token_from_env()
        self.driver_python = driver_python or (sys.executable if not ray_address else "python")
        self.poll_s = poll_s
        self.http_timeout_s = http_timeout_s
        self.dispatch_timeout_s = dispatch_timeout_s
        self.stop_grace_s = stop_grace_s
        self._head_options = local_head or {}
        if auto_resume is None:
            auto_resume = os.environ.get("RLVR_AUTO_RESUME", "1").strip().lower() not in (
                "0", "false", "no", "off",
            )  # fmt: skip
        self.auto_resume = auto_resume
        self._head: LocalRayHead | None = None
        self._client: Any = None
        self._error: str | None = None
        self._retry_at = 0.0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one tick at a time (the thread, or a test's tick())
        self._needs_cache: dict[str, dict[str, float]] = {}
        self._waiting: str | None = None  # the job at the head of the queue, last logged

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Start the background thread (its first tick reconciles the store with Ray)."""
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._loop, name="rlvr-runner", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread; an owned head goes down with all its jobs' processes, after they
        were stopped through the Jobs API (so they checkpoint) and queued to resume when the
        service is back (``auto_resume``; else marked failed)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.http_timeout_s * 3)
            self._thread = None
        if self._head is not None:
            with self._lock:
                self._release_head("the service stopped and took its local Ray head")

    def _release_head(self, reason: str) -> None:
        """Take the owned head down with every job it runs, bounded in time: interrupt the
        jobs in the store, ``stop_job`` each (its driver checkpoints, as on a cancel), wait
        up to ``stop_grace_s`` for them, then signal whatever of the head is left."""
        head, client = self._head, self._client
        if head is None:
            return
        ray_jobs = [j for j in self.store.jobs_for_runner() if j.submission_id]
        for job in ray_jobs:
            if job.terminal:  # cancelled, its driver still stopping
                self.store.set_dispatch(job.id, ray_status="STOPPED")
            else:
                self._interrupt(job, reason)
        if client is not None and head.alive():
            # Each driver sees its attempt superseded (or its cancel) at its next step and
            # stops there with a checkpoint; stop_job (SIGTERM) is for those that do not.
            deadline = time.monotonic() + self.stop_grace_s
            while time.monotonic() < deadline and any(_driver_pids(j.id) for j in ray_jobs):
                time.sleep(0.5)
            left = [j.submission_id for j in ray_jobs if _driver_pids(j.id)]
            if left:
                self._stop_ray_jobs(client, left)
        head.stop()
        self._head = None
        self._client = None

    def _interrupt(self, job: JobRecord, reason: str) -> None:
        """A job whose Ray job is gone or going through no fault of its own: queued again to
        resume from its last checkpoint (``auto_resume``), else failed."""
        if self.auto_resume and self.store.requeue(job.id):
            log.warning("%s: job %s is queued to resume from its last checkpoint", reason, job.id)
            return
        self.store.set_status(
            job.id, "failed", error=f"{reason}; resume it to continue from its last checkpoint"
        )
        self.store.set_dispatch(job.id, ray_status="STOPPED")

    def _stop_ray_jobs(self, client: Any, submission_ids: list[str | None]) -> None:
        """``stop_job`` each, then wait (at most ``stop_grace_s`` + 5 s) until none runs."""
        pending = {sid for sid in submission_ids if sid}
        for sid in pending:
            try:
                client.stop_job(sid)
            except Exception as exc:  # gone already, or Ray not answering
                log.info("could not stop Ray job %s: %s", sid, exc)
        deadline = time.monotonic() + self.stop_grace_s + 5.0
        while pending and time.monotonic() < deadline:
            try:
                active = {
                    d.submission_id
                    for d in client.list_jobs()
                    if getattr(d.status, "value", str(d.status)) in _RAY_ACTIVE
                }
            except Exception:
                return
            pending &= active
            if pending:
                time.sleep(0.5)

    def wake(self) -> None:
        """Tick now rather than at the next poll (a submission or cancel just happened)."""
        self._wake.set()

    def state(self) -> RayState:
        address = self._head.address if self._head else self.ray_address
        return RayState(address, self._head is not None, self._client is not None, self._error)

    # -- Ray calls ---------------------------------------------------------------------
    def client(self) -> Any:
        """The Jobs API client, connecting (or starting the local head) on first use."""
        if self._client is not None:
            return self._client
        if time.monotonic() < self._retry_at:
            raise RayUnavailableError(self._error or "Ray is unavailable")
        try:
            address, token = self.ray_address, self.ray_token
            if address is None:
                self._head = self._head or LocalRayHead(**self._head_options)
                address = self._head.start()
                token = self._head.token
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            self._client = _job_client_class()(
                address, timeout_s=self.http_timeout_s, headers=headers
            )
            self._error = None
        except Exception as exc:
            self._error = (
                f"cannot reach the Ray cluster at {self.ray_address or 'local head'}: {exc}"
            )
            self._retry_at = time.monotonic() + 10.0
            log.warning("%s", self._error)
            raise RayUnavailableError(self._error) from exc
        return self._client

    def logs(self, job: JobRecord) -> str:
        """The driver's output as Ray captured it."""
        if not job.submission_id:
            return ""
        if self._client is None and self.ray_address is None:
            # Never start a local head just to read logs: its jobs would not be there.
            raise RayUnavailableError("the local Ray head is not running")
        try:
            return self.client().get_job_logs(job.submission_id)
        except RayUnavailableError:
            raise
        except Exception as exc:
            raise RayUnavailableError(f"Ray has no logs for {job.submission_id}: {exc}") from exc

    # -- the loop ----------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.tick()
            except Exception:  # keep watching; the next tick retries
                log.exception("runner tick failed")
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def tick(self) -> None:
        """One round of dispatch + reconcile (the background thread calls this)."""
        with self._lock:
            if self._head is not None and not self._head.alive():
                log.warning(
                    "the local Ray head exited; its jobs' processes are stopped. Its log:\n%s",
                    self._head.log_tail(1000),
                )
                self._release_head("the local Ray head exited")
            jobs = self.store.jobs_for_runner()
            if not jobs:
                return
            try:
                client = self.client()
                ray_jobs = {d.submission_id: d for d in client.list_jobs() if d.submission_id}
            except Exception as exc:
                self._fail_undispatchable(jobs, str(exc))
                if not isinstance(exc, RayUnavailableError):
                    self._client = None  # reconnect next time (the head may have moved)
                return
            for job in jobs:  # first: what has ended frees its resources
                if self._stopping.is_set():
                    return
                if job.submission_id is not None:
                    self._reconcile(client, job, ray_jobs.get(job.submission_id))
            self._admit(client)

    # -- the admission queue -----------------------------------------------------------
    def _admit(self, client: Any) -> None:
        """Submit queued jobs in admission order (higher priority first, then oldest) while
        each one's needs (:func:`job_needs`) fit what the cluster has beyond the needs of
        the jobs already in Ray; the first that does not fit waits, and the jobs behind it
        too. A cluster whose resources cannot be read takes one job at a time."""
        jobs = self.store.jobs_for_runner()
        queued = [j for j in jobs if j.status == "queued" and j.submission_id is None]
        if not queued:
            return
        held = [
            j for j in jobs if j.submission_id and (not j.terminal or j.ray_status in _RAY_ACTIVE)
        ]
        capacity = self._capacity(client)
        for job in queued:
            if self._stopping.is_set():
                return
            if capacity is None:
                if held:
                    return
            else:
                total, cluster = capacity
                free = dict(total)
                for other in held:
                    for k, v in self._needs(other, cluster, total).items():
                        free[k] -= v
                needs = self._needs(job, cluster, total)
                short = [k for k, v in needs.items() if v > free[k] + 1e-6]
                if short:
                    if self._waiting != job.id:
                        self._waiting = job.id
                        log.info("job %s waits for %s (needs %s, free %s)", job.id,
                                 ", ".join(short), needs, free)  # fmt: skip
                    return
            if job.resume and _driver_pids(job.id):
                # An earlier attempt's driver on this machine (a crashed service's) is still
                # ending (within RLVR_DRIVER_LOST_S + RLVR_DRIVER_EXIT_S): never two at once.
                log.info("job %s waits for its previous driver to end", job.id)
                return
            cpus = capacity[0].get("CPU") if capacity is not None else None
            outcome = self._dispatch(client, job, cpus)
            if outcome == "retry":
                return
            if outcome == "submitted":
                held.append(job)

    def _capacity(self, client: Any) -> tuple[dict[str, float], Any] | None:
        """(total ``CPU``/``GPU``/``memory`` of the cluster's nodes, the cluster for the
        placement plan), from the Jobs API's ``/api/cluster_status``; None when unknown."""
        from rlvr.plan.placement import cluster_from_status

        try:
            response = client._do_request("GET", "/api/cluster_status")
            status = response.json() if response.status_code == 200 else {}
            cluster = cluster_from_status(status)
        except Exception as exc:  # an older Ray, a dashboard restarting: one job at a time
            log.info("cannot read the cluster's resources: %s", exc)
            return None
        if cluster is None:  # nodes not reported yet
            return None
        report = status["data"]["clusterStatus"]["loadMetricsReport"]
        total = dict.fromkeys(("CPU", "GPU", "memory"), 0.0)
        for usage in (report.get("usageByNode") or {}).values():
            for key in total:
                value = usage.get(key)
                if isinstance(value, list) and len(value) == 2:
                    total[key] += float(value[1])
        return total, cluster

    def _needs(self, job: JobRecord, cluster: Any, total: dict[str, float]) -> dict[str, float]:
        """:func:`job_needs` of a stored job (cached), each at most the cluster's total: a
        job larger than the cluster runs alone (its plan names what it lacks)."""
        if job.id not in self._needs_cache:
            if len(self._needs_cache) > 10_000:
                self._needs_cache.clear()
            try:
                self._needs_cache[job.id] = job_needs(JobSpec.model_validate(job.spec), cluster)
            except Exception as exc:  # a spec of an older rlvr: it will fail on its own
                log.info("cannot estimate what job %s needs: %s", job.id, exc)
                self._needs_cache[job.id] = {}
        return {k: min(v, total[k]) for k, v in self._needs_cache[job.id].items()}

    def _dispatch(self, client: Any, job: JobRecord, cluster_cpus: float | None = None) -> str:
        """Submit ``job`` to Ray: ``submitted`` (or found submitted before a crash),
        ``retry`` (Ray cannot take it yet) or ``refused`` (the job failed). The driver asks
        for :func:`driver_resources` (no GPU)."""
        submission_id = job.id if job.attempt == 1 else f"{job.id}-r{job.attempt}"
        cmd = [
            self.driver_python, "-m", "rlvr.jobs.driver",
            "--job-id", job.id, "--attempt", str(job.attempt),
        ]  # fmt: skip
        if job.resume:
            cmd.append("--resume")
        try:
            client.submit_job(
                entrypoint=shlex.join(cmd),
                submission_id=submission_id,
                runtime_env={
                    "env_vars": {
                        "RLVR_DB_URL": self.db_url,
                        # after stop_job's SIGTERM, time to checkpoint before SIGKILL
                        "RAY_JOB_STOP_WAIT_TIME_S": str(int(self.stop_grace_s)),
                    }
                },
                metadata={"rlvr_job_id": job.id, "rlvr_name": job.name, "rlvr_owner": job.owner},
                **driver_resources(JobSpec.model_validate(job.spec), cluster_cpus),
            )
        except Exception as exc:
            text = str(exc)
            if "already" in text.lower():  # submitted before a crash: adopt it
                log.info("job %s was already submitted as %s", job.id, submission_id)
            elif _transient(exc) and time.time() - job.updated_at < self.dispatch_timeout_s:
                # e.g. a fresh head whose job agent has not registered yet: next tick
                log.info("Ray cannot take job %s yet (%s); retrying", job.id, text[:200])
                return "retry"
            else:
                self.store.set_status(
                    job.id, "failed", error=f"Ray refused the job ({submission_id}): {text}"
                )
                return "refused"
        self.store.set_dispatch(job.id, submission_id=submission_id, ray_status="PENDING")
        log.info("submitted job %s as Ray job %s", job.id, submission_id)
        return "submitted"

    def _reconcile(self, client: Any, job: JobRecord, info: Any) -> None:
        if info is None:
            if not job.terminal and self.auto_resume and self.store.requeue(job.id):
                # The cluster (an owned head after a crash of the service) was restarted.
                log.warning("Ray has no job %s: job %s is queued to resume", job.submission_id,
                            job.id)  # fmt: skip
                return
            self.store.set_dispatch(job.id, ray_status="MISSING")
            self.store.set_status(
                job.id,
                "failed",
                error=f"orphaned: the Ray cluster has no job {job.submission_id} (was it "
                "restarted?); resume to continue from the last checkpoint",
            )
            return
        ray_status = getattr(info.status, "value", str(info.status))
        if ray_status != job.ray_status:
            self.store.set_dispatch(job.id, ray_status=ray_status)
        if ray_status in _RAY_ACTIVE:
            if job.status == "cancelled":
                # The driver sees `cancelled` in the store and stops at the next step with a
                # checkpoint; Ray's stop_job (SIGTERM to the driver *and* its children, such
                # as reward workers) is the fallback for one that does not.
                waited = time.time() - (job.finished_at or 0.0)
                if ray_status == "PENDING" or waited > self.stop_grace_s:
                    try:
                        client.stop_job(job.submission_id)
                    except Exception as exc:
                        log.warning("could not stop Ray job %s: %s", job.submission_id, exc)
            elif ray_status == "RUNNING" and job.status == "queued":
                self.store.set_status(job.id, "running")
            return
        status = _RAY_TO_STATUS.get(ray_status)
        if status and not job.terminal:  # the driver could not say so itself
            error = None
            if status == "failed":
                error = f"the Ray job {job.submission_id} failed: {info.message or 'no message'}"
            self.store.set_status(job.id, status, error=error)

    def _fail_undispatchable(self, jobs: list[JobRecord], error: str) -> None:
        now = time.time()
        for job in jobs:
            if (
                job.status == "queued"
                and job.submission_id is None
                and now - job.updated_at > self.dispatch_timeout_s
            ):
                self.store.set_status(
                    job.id,
                    "failed",
                    error=f"could not submit to Ray for {self.dispatch_timeout_s:.0f}s: {error}",
                )
