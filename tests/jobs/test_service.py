"""End to end: `rlvr serve` processes over real HTTP, a real local Ray cluster, the real
trainer on a tiny model. Submit the demo job, restart the service mid-job and follow it
through SSE to success losing nothing; cancel and resume a job; `rlvr demo` itself. A
service with a head of its own: SIGTERM checkpoints the job and leaves no process behind,
the next start resumes it by itself, and so does the start after a kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from rlvr.api.server import free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


class Service:
    """`python -m rlvr serve` in a subprocess (a restart is a new process on the same db)."""

    def __init__(self, tmp: Path, ray_head, model_root: Path, port: int | None = None):
        """``ray_head`` None: the service starts and owns a local head."""
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (tmp / "data").mkdir(exist_ok=True)
        self.db_url = f"sqlite:///{tmp / 'rlvr.db'}"
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")},
            "RLVR_DB_URL": self.db_url,
            "RLVR_RUNS_DIR": str(tmp / "runs"),
            "RLVR_DATA_ROOTS": str(tmp / "data"),
            "RLVR_MODEL_ROOTS": str(model_root),
            "RLVR_DRIVER_PYTHON": sys.executable,
        }
        if ray_head is not None:
            self.env |= {"RAY_ADDRESS": ray_head.address, "RAY_AUTH_TOKEN": ray_head.token}
        self.log = open(tmp / f"serve-{self.port}.log", "ab")  # noqa: SIM115
        self.proc: subprocess.Popen | None = None

    def start(self) -> Service:
        cmd = [
            sys.executable,
            "-m",
            "rlvr",
            "serve",
            "--port",
            str(self.port),
            "--log-level",
            "warning",
        ]
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "rlvr serve exited during startup"
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError("rlvr serve did not answer /healthz within 60s")

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it has not ended after 150 s; returns the exit code."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=150)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode if self.proc else None

    def api(self, method: str, path: str, **kw) -> httpx.Response:
        return httpx.request(method, self.url + path, timeout=30, **kw)

    def job(self, job_id: str) -> dict:
        return self.api("GET", f"/v1/jobs/{job_id}").json()

    def submit(self, spec: dict) -> str:
        r = self.api("POST", "/v1/jobs", content=yaml.safe_dump(spec),
                     headers={"Content-Type": "application/yaml"})  # fmt: skip
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def follow(self, job_id: str, timeout_s: float = 240) -> list[tuple[str, dict]]:
        """Every event of the job's SSE stream until the server ends it (job finished)."""
        events, kind = [], "message"
        with httpx.stream("GET", f"{self.url}/v1/jobs/{job_id}/events",
                          timeout=httpx.Timeout(10, read=timeout_s)) as r:  # fmt: skip
            for line in r.iter_lines():
                if line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:"):
                    events.append((kind, json.loads(line[5:])))
        return events


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


@pytest.fixture
def service(tmp_path, ray_head, model_root):
    svc = Service(tmp_path, ray_head, model_root).start()
    yield svc
    svc.stop()


def demo_spec(tiny_spec, max_steps: int) -> dict:
    """examples/arithmetic.yaml, shrunk to test size and pointed at the prebuilt tiny model."""
    spec = tiny_spec(name="arithmetic-demo", max_steps=max_steps)
    example = REPO / "examples" / "arithmetic.yaml"
    if example.is_file():
        demo = yaml.safe_load(example.read_text())
        spec["name"] = demo.get("name", spec["name"])
        spec["data"]["prompt_template"] = demo.get("data", {}).get("prompt_template", "think")
        spec["reward"]["verifiers"] = demo.get("reward", {}).get(
            "verifiers", spec["reward"]["verifiers"]
        )
    return spec


def test_cancel_stops_the_ray_job_and_resume_continues_from_the_checkpoint(service, tiny_spec):
    job_id = service.submit(tiny_spec(name="long", max_steps=2000, every=5))
    wait_for(lambda: service.job(job_id)["step"] >= 2, 120, "two steps")
    r = service.api("POST", f"/v1/jobs/{job_id}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    ended = ("SUCCEEDED", "STOPPED")  # stopped by itself at a step boundary, or by stop_job
    job = wait_for(lambda: (j := service.job(job_id))["ray_status"] in ended and j, 90,
                   "the Ray job to end")  # fmt: skip
    assert job["status"] == "cancelled"
    stopped_at = job["step"]
    assert 2 <= stopped_at < 2000
    time.sleep(3)
    assert service.job(job_id)["step"] == stopped_at  # nothing runs any more

    ckpts = service.api("GET", f"/v1/jobs/{job_id}/checkpoints").json()["checkpoints"]
    resume_from = ckpts[-1]["step"]
    assert resume_from == stopped_at  # the stop wrote a checkpoint of its last step
    assert service.api("POST", f"/v1/jobs/{job_id}/resume").status_code == 202
    wait_for(lambda: service.job(job_id)["step"] > stopped_at + 2, 120, "the resumed run's steps")
    job = service.job(job_id)
    assert job["status"] == "running" and job["attempt"] == 2
    assert job["submission_id"] == f"{job_id}-r2"
    series = service.api("GET", f"/v1/jobs/{job_id}/metrics?names=reward/mean").json()["series"]
    steps = series["reward/mean"]["steps"]
    assert steps == list(range(1, len(steps) + 1))  # contiguous, each step once
    assert resume_from >= 2
    service.api("POST", f"/v1/jobs/{job_id}/cancel")
    wait_for(lambda: service.job(job_id)["ray_status"] in ended, 90, "the second stop")


def test_demo_job_survives_a_service_restart_and_is_followed_over_sse_to_success(
    tmp_path, ray_head, model_root, tiny_spec
):
    spec = demo_spec(tiny_spec, max_steps=40)
    spec["checkpoint"], spec["eval"] = {"every": 20}, {"every": 20}  # two dicts: no YAML alias
    first = Service(tmp_path, ray_head, model_root).start()
    try:
        job_id = first.submit(spec)
        wait_for(lambda: first.job(job_id)["step"] >= 3, 120, "three steps")
    finally:
        first.stop()  # the Ray job keeps running on the cluster, writing to the store
    second = Service(tmp_path, ray_head, model_root).start()
    try:
        events = second.follow(job_id)  # from the first event: what happened meanwhile too
        statuses = [d["status"] for k, d in events if k == "status"]
        assert statuses == ["queued", "running", "succeeded"], statuses  # no orphan, no failure
        metric_steps = [d["step"] for k, d in events if k == "metrics"]
        assert metric_steps == list(range(0, 41))  # step 0: the initial policy's eval

        job = second.job(job_id)
        assert job["status"] == "succeeded" and job["step"] == 40 and job["error"] is None
        wait_for(lambda: second.job(job_id)["ray_status"] == "SUCCEEDED", 30, "Ray's SUCCEEDED")
        series = second.api("GET", f"/v1/jobs/{job_id}/metrics").json()["series"]
        for name in ("reward/mean", "accuracy", "loss", "kl", "entropy", "response/length_mean",
                     "think/length_mean", "throughput/rollout_tok_s"):  # fmt: skip
            assert series[name]["steps"] == list(range(1, 41)), name  # all there, each once
        assert series["eval/accuracy"]["steps"] == [0, 20, 40]
        samples = second.api("GET", f"/v1/jobs/{job_id}/samples").json()["samples"]
        assert samples and samples[0]["step"] == 40
        assert {"math", "think_format"} <= set(samples[0]["verdicts"])
        assert isinstance(samples[0]["completion"], str) and "answer" in samples[0]
        ckpts = second.api("GET", f"/v1/jobs/{job_id}/checkpoints").json()["checkpoints"]
        assert [c["step"] for c in ckpts] == [20, 40]
        assert (Path(ckpts[-1]["path"]) / "config.json").is_file()  # an HF model directory
        logs = second.api("GET", f"/v1/jobs/{job_id}/logs").json()
        assert logs["source"] == "ray" and job_id in logs["text"]
    finally:
        second.stop()


def test_rlvr_demo_serves_submits_follows_and_prints_the_dashboard_url(
    tmp_path, ray_head, model_root, tiny_spec
):
    spec = tmp_path / "demo.yaml"
    spec.write_text(yaml.safe_dump(demo_spec(tiny_spec, max_steps=10)))
    env = Service(tmp_path, ray_head, model_root).env | {"RLVR_HOME": str(tmp_path / "home")}
    out = subprocess.run(
        [sys.executable, "-m", "rlvr", "demo", "--spec", str(spec), "--max-steps", "3",
         "--port", str(free_port()), "--no-keep-serving"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert any(line.startswith("rlvr service: http://127.0.0.1:") for line in lines)
    assert [line.split()[1] for line in lines if line.startswith("step ") and "reward" in line] == [
        "1/3", "2/3", "3/3",
    ]  # fmt: skip
    assert any(" succeeded at step 3: reward " in line for line in lines)
    assert any(
        line.startswith("dashboard: http://127.0.0.1:") and "#/jobs/" in line for line in lines
    )


def test_a_service_with_its_own_head_loses_nothing_to_a_sigterm_or_a_crash(
    tmp_path, model_root, tiny_spec, processes_mentioning
):
    """`rlvr serve` without RAY_ADDRESS owns its head. SIGTERM mid-job: the job is stopped
    through the Jobs API (it checkpoints), queued to resume, and no process of the head or
    the job remains anywhere. The next start resumes it by itself. kill -9 of that service:
    its head and driver end by themselves, and the start after that resumes the job from
    its last checkpoint to success, every step's metrics once."""
    from rlvr.jobs.store import JobStore

    # Long enough that neither stop lands after the last step (a tiny step takes ~0.1 s:
    # a 12-step job could finish between "step 2" and the SIGTERM), checkpoints every 2.
    spec = tiny_spec(name="restarts", max_steps=100, every=2)
    spec["eval"]["every"] = 50
    services = [first := Service(tmp_path, None, model_root).start()]
    store = JobStore(first.db_url)
    try:
        job_id = first.submit(spec)
        wait_for(lambda: first.job(job_id)["step"] >= 2, 240, "two steps")
        assert first.stop() in (0, -signal.SIGTERM)  # ended by itself, not killed
        assert processes_mentioning(job_id, first.db_url) == []  # no driver, head or guard
        job = store.get_job(job_id)
        assert (job.status, job.attempt, job.resume, job.error) == ("queued", 2, True, None)
        stopped_at = job.step
        assert [c["step"] for c in store.checkpoints(job_id)][-1] == stopped_at  # stop's own

        services.append(second := Service(tmp_path, None, model_root).start())
        try:  # resumed without anyone asking
            resumed = wait_for(
                lambda: (j := second.job(job_id))["attempt"] == 2
                and (j["step"] > stopped_at or j["status"] == "succeeded") and j,
                420, "the job to resume by itself",
            )  # fmt: skip
            # (a tiny job may already have finished its last steps: then the crash below
            # finds nothing to resume, and the checks after it still hold)
            assert resumed["status"] in ("running", "succeeded")
        finally:
            second.proc.kill()  # a crash: no shutdown code runs
            second.proc.wait(timeout=30)
        wait_for(lambda: not processes_mentioning(job_id, first.db_url), 120,
                 "the crashed service's head and driver to end by themselves")  # fmt: skip

        services.append(third := Service(tmp_path, None, model_root).start())
        try:
            events = third.follow(job_id, timeout_s=400)
            assert [d["status"] for k, d in events if k == "status"][-1] == "succeeded"
            job = third.job(job_id)
            # attempt 3 resumed after the crash; 2 if its driver finished the last steps
            # in the moment before the head's guard swept it (tiny steps are fast).
            assert job["status"] == "succeeded" and job["step"] == 100 and job["attempt"] in (2, 3)
            series = third.api("GET", f"/v1/jobs/{job_id}/metrics").json()["series"]
            assert series["reward/mean"]["steps"] == list(range(1, 101))  # each step once
            assert series["eval/accuracy"]["steps"] == [0, 50, 100]
        finally:
            assert third.stop() in (0, -signal.SIGTERM)
        assert processes_mentioning(job_id, first.db_url) == []
    finally:
        store.close()
        for service in services:  # those a failed check left running
            service.stop()
