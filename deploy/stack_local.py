"""The CPU stack end to end, without a registry: build, up, a demo job over REST, an API
restart, down.

1. the engine and the Debian base image (``deploy/engine.py``), the API and worker images
   (``deploy/build_local.py``) and the Postgres image (``deploy/docker/postgres.Dockerfile``
   on the same base; Debian's postgresql-15);
2. ``docker-compose -f deploy/compose.cpu.yaml -p rlvr-cpu up -d``: Postgres, a Ray head, one
   CPU Ray worker (both from the worker image; ``--ray-image api``: from the API image, which
   skips the worker's build of several GB) and the API, host networking, loopback ports;
3. the demo job (examples/arithmetic.yaml, shortened to ``--max-steps``) submitted with
   ``POST /v1/jobs``; once it runs, ``docker-compose restart api``; the job is still there
   (Postgres) and reaches ``succeeded``;
4. ``docker-compose down -v``: no container, network or volume of the project is left.

    .venv/bin/python deploy/stack_local.py [--state-dir DIR] [--max-steps 4] [--ray-image api]
        [--keep]

Prints one JSON line with each step's seconds and the job's final record. Exit 1 on a
failure (the stack is taken down anyway unless ``--keep``).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "deploy"))
import build_local  # noqa: E402  (deploy/ is not a package)

PROJECT = "rlvr-cpu"
COMPOSE = REPO / "deploy" / "compose.cpu.yaml"


def _compose(env: dict[str, str], *args: str, timeout: float = 600) -> str:
    cmd = ["docker-compose", "-f", str(COMPOSE), "-p", PROJECT, *args]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[3:])} failed:\n{(r.stdout + r.stderr)[-4000:]}")
    return r.stdout


class Api:
    def __init__(self, port: int, token: str) -> None:
        self.base, self.token = f"http://127.0.0.1:{port}", token

    def request(self, method: str, path: str, body: bytes | None = None, ctype: str = "") -> dict:
        req = urllib.request.Request(self.base + path, data=body, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        if ctype:
            req.add_header("Content-Type", ctype)
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def wait_healthy(self, timeout_s: float) -> float:
        t0 = time.monotonic()
        while True:
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=5):
                    return time.monotonic() - t0
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() - t0 > timeout_s:
                    raise RuntimeError(f"the API did not answer {self.base}/healthz") from None
                time.sleep(1.0)

    def wait_job(self, job_id: str, until, timeout_s: float) -> dict:
        t0 = time.monotonic()
        while True:
            job = self.request("GET", f"/v1/jobs/{job_id}")
            if until(job):
                return job
            if job["status"] in ("failed", "cancelled") or time.monotonic() - t0 > timeout_s:
                raise RuntimeError(f"job {job_id}: {json.dumps(job)[:2000]}")
            time.sleep(2.0)


def demo_spec(max_steps: int) -> bytes:
    """examples/arithmetic.yaml, shortened: ``max_steps``, an eval and a checkpoint at the end."""
    spec = yaml.safe_load((REPO / "examples" / "arithmetic.yaml").read_text())
    spec["algorithm"]["max_steps"] = max_steps
    spec["checkpoint"] = {"every": max_steps}
    spec["eval"] = {**spec.get("eval", {}), "every": max_steps}
    return yaml.safe_dump(spec, sort_keys=False).encode()


def leftovers(env: dict[str, str]) -> list[str]:
    """Containers, networks and volumes of the compose project still present."""
    label = f"label=com.docker.compose.project={PROJECT}"
    found = []
    for kind in ("ps -a", "network ls", "volume ls"):
        r = subprocess.run(
            ["docker", *kind.split(), "-q", "--filter", label],
            env=env,
            capture_output=True,
            text=True,
        )
        found += [f"{kind.split()[0]} {x}" for x in r.stdout.split()]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", help="a private engine (deploy/engine.py --state-dir)")
    parser.add_argument("--wheels", default="/opt/wheels")
    parser.add_argument("--ca-bundle", default=os.environ.get("PIP_CERT"))
    parser.add_argument("--max-steps", type=int, default=4)
    parser.add_argument("--port", type=int, default=28000)
    parser.add_argument("--job-timeout", type=float, default=1800)
    parser.add_argument(
        "--ray-image",
        choices=["worker", "api"],
        default="worker",
        help="the image the Ray nodes run from (api: no worker build)",
    )
    parser.add_argument("--keep", action="store_true", help="leave the stack up")
    args = parser.parse_args(argv)

    engine_mod = build_local._engine_module()
    report: dict = {"ray_image": args.ray_image}
    t0 = time.monotonic()
    engine = engine_mod.start_engine(args.state_dir)
    env = {**os.environ, **({"DOCKER_HOST": engine.host} if engine.host else {})}
    base = engine_mod.build_base_image(host=engine.host)
    build_base = build_local.base_with_ca(env, base, args.ca_bundle) if args.ca_bundle else base
    api_image, pg_image = "rlvr-api:local", "rlvr-postgres:local"
    build_local.build_api_image(env, build_base, api_image, args.wheels)
    ray_image = api_image
    if args.ray_image == "worker":
        ray_image = "rlvr-worker:local"
        build_local.build_worker_image(env, build_base, ray_image)
    build_local.docker_build(env, "postgres.Dockerfile", pg_image, {"BASE_IMAGE": base})
    report["images_s"] = round(time.monotonic() - t0, 1)

    stack_env = {
        **env,
        "RLVR_API_TOKEN": secrets.token_hex(16),
        "POSTGRES_PASSWORD": secrets.token_hex(16),
        "RAY_AUTH_TOKEN": secrets.token_hex(16),
        "RLVR_PORT": str(args.port),
        "RLVR_API_IMAGE": api_image,
        "RLVR_WORKER_IMAGE": ray_image,
        "RLVR_POSTGRES_IMAGE": pg_image,
    }
    api = Api(args.port, stack_env["RLVR_API_TOKEN"])
    ok = False
    try:
        t = time.monotonic()
        _compose(stack_env, "up", "-d")
        api.wait_healthy(300)
        report["up_s"] = round(time.monotonic() - t, 1)

        t = time.monotonic()
        job = api.request("POST", "/v1/jobs", demo_spec(args.max_steps), "application/yaml")
        job_id = job["id"]
        running = api.wait_job(job_id, lambda j: j["status"] == "running", args.job_timeout)
        report["to_running_s"] = round(time.monotonic() - t, 1)

        t = time.monotonic()
        _compose(stack_env, "restart", "api")
        api.wait_healthy(300)
        after = api.request("GET", f"/v1/jobs/{job_id}")
        report["api_restart_s"] = round(time.monotonic() - t, 1)
        report["after_restart"] = {"status": after["status"], "step": after.get("step")}
        if after["status"] not in ("running", "succeeded"):
            raise RuntimeError(f"after the API restart the job is {after['status']}: {after}")

        final = api.wait_job(job_id, lambda j: j["status"] == "succeeded", args.job_timeout)
        report["job_s"] = round(time.monotonic() - t, 1)
        report["job"] = {
            k: final.get(k)
            for k in (
                "id",
                "status",
                "step",
                "max_steps",
                "reward_mean",
                "accuracy",
                "eval_accuracy",
            )
        }
        report["job_running_at_restart_step"] = running.get("step")
        ok = True
    finally:
        if not args.keep:
            t = time.monotonic()
            if not ok:
                report["logs"] = _compose(stack_env, "logs", "--tail", "40")[-6000:]
            _compose(stack_env, "down", "-v", "--timeout", "20")
            report["down_s"] = round(time.monotonic() - t, 1)
            report["left_after_down"] = leftovers(env)
        print(json.dumps(report))
    return 0 if ok and not report.get("left_after_down") else 1


if __name__ == "__main__":
    sys.exit(main())
