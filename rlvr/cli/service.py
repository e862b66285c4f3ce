"""``rlvr serve | submit | jobs | status | cancel | resume | demo``: the service and its client.

The client subcommands talk to a running service over HTTP (``--server``, default
``$RLVR_SERVER`` or ``http://$RLVR_HOST:$RLVR_PORT``; ``--token``, default
``$RLVR_API_TOKEN``). ``rlvr demo`` runs everything in one process: the service (with a
local Ray head), the demo job, and a live progress line per step.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlvr.cli import UsageError

TERMINAL = ("succeeded", "failed", "cancelled")
HTTP_TIMEOUT_S = 30.0
SSE_READ_TIMEOUT_S = 60.0  # the server pings every 15 s; silence this long means it is gone


# -- HTTP client -----------------------------------------------------------------------------
def _default_server() -> str:
    if os.environ.get("RLVR_SERVER"):
        return os.environ["RLVR_SERVER"].rstrip("/")
    host = os.environ.get("RLVR_HOST", "127.0.0.1")
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://{host}:{os.environ.get('RLVR_PORT', '8000')}"


class _Client:
    def __init__(self, server: str, token: str | None):
        import httpx

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.server = server.rstrip("/")
        self.http = httpx.Client(base_url=self.server, headers=headers, timeout=HTTP_TIMEOUT_S)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            r = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise UsageError(
                f"cannot reach the rlvr service at {self.server} ({exc}); start it with "
                "`rlvr serve` or pass --server"
            ) from None
        if r.status_code == 401:
            raise UsageError("the service wants a token: pass --token or set RLVR_API_TOKEN")
        if r.status_code == 422:
            lines = []
            for e in r.json().get("detail", []):
                loc = ".".join(str(p) for p in e.get("loc", []) if p != "body") or "(spec)"
                lines.append(f"  {loc}: {e.get('msg')}")
            raise UsageError("the service rejected the spec:\n" + "\n".join(lines))
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            if r.status_code in (403, 404, 409, 413, 415, 429):  # the caller can act on these
                raise UsageError(str(detail))
            raise RuntimeError(f"{method} {path}: HTTP {r.status_code}: {detail}")
        return r.json()

    def events(self, job_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """Follow ``/v1/jobs/{id}/events``, reconnecting after the last event id."""
        import httpx

        last_id = 0
        timeout = httpx.Timeout(HTTP_TIMEOUT_S, read=SSE_READ_TIMEOUT_S)
        while True:
            try:
                with self.http.stream(
                    "GET", f"/v1/jobs/{job_id}/events", params={"after": last_id}, timeout=timeout
                ) as r:
                    if r.status_code != 200:
                        raise UsageError(f"cannot follow job {job_id}: HTTP {r.status_code}")
                    kind, data = "message", []
                    for line in r.iter_lines():
                        if line.startswith("event:"):
                            kind = line[6:].strip()
                        elif line.startswith("data:"):
                            data.append(line[5:].strip())
                        elif line.startswith("id:"):
                            last_id = int(line[3:].strip() or last_id)
                        elif line == "" and data:
                            yield kind, json.loads("\n".join(data))
                            kind, data = "message", []
                return  # the server closes the stream when the job has finished
            except httpx.HTTPError:
                time.sleep(1.0)  # reconnect after the last event seen


def _client(args: argparse.Namespace) -> _Client:
    return _Client(args.server, args.token)


def _add_client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", default=_default_server(), help="the service's URL")
    p.add_argument("--token", default=os.environ.get("RLVR_API_TOKEN"), help="API bearer token")


# -- printing --------------------------------------------------------------------------------
def _fmt(x: Any, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _age(seconds: float) -> str:
    s = int(seconds)
    return (
        f"{s}s" if s < 60 else f"{s // 60}m" if s < 3600 else f"{s // 3600}h{s % 3600 // 60:02d}m"
    )


def _progress_line(step: int, values: dict[str, Any], max_steps: int | None) -> str | None:
    parts = []
    if "reward/mean" in values:
        parts.append(f"reward {_fmt(values['reward/mean'])}")
    if "accuracy" in values:
        parts.append(f"accuracy {_fmt(values['accuracy'])}")
    if "eval/accuracy" in values:
        parts.append(f"eval accuracy {_fmt(values['eval/accuracy'])}")
    if "response/length_mean" in values:
        parts.append(f"length {_fmt(values['response/length_mean'], 1)}")
    if not parts:
        return None
    of = f"/{max_steps}" if max_steps else ""
    return f"step {step}{of}  " + "  ".join(parts)


def _follow(client: _Client, job_id: str, max_steps: int | None = None) -> str:
    """Print a line per step until the job finishes; returns its final status."""
    status = "queued"
    for kind, data in client.events(job_id):
        if kind == "metrics":
            line = _progress_line(data["step"], data.get("values", {}), max_steps)
            if line:
                print(line, flush=True)
        elif kind == "checkpoint":
            print(f"checkpoint at step {data['step']}: {data['path']}", flush=True)
        elif kind == "status":
            status = data["status"]
            print(f"[{job_id}] {status}", flush=True)
            if status == "failed" and data.get("error"):
                print(data["error"], file=sys.stderr)
    return status


# -- subcommands -----------------------------------------------------------------------------
def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from rlvr.api.app import create_app
    from rlvr.api.settings import Settings
    from rlvr.jobs.store import SchemaVersionError

    db_url = args.db
    if db_url and "://" not in db_url:  # a plain path means a SQLite file
        db_url = f"sqlite:///{Path(db_url).expanduser().resolve()}"
    try:
        settings = Settings.from_env(
            host=args.host, port=args.port, db_url=db_url, ray_address=args.ray_address
        )
        app = create_app(settings)
    except (SchemaVersionError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    print(f"rlvr service on http://{settings.host}:{settings.port}  (db {settings.db_url})")
    if app.state.tokens.open:  # create_app allows that on a loopback bind only
        print(
            "WARNING: no RLVR_API_TOKEN or RLVR_TOKENS_FILE: every caller on this machine is "
            "the admin; set a token before binding to another address",
            file=sys.stderr,
            flush=True,
        )
    # SIGTERM/SIGINT (uvicorn's) and SIGHUP (a closed terminal) end the service alike: open
    # event streams get 10 s, then the runner stops its owned head's jobs (they checkpoint,
    # to resume at the next start) and every process of the head; any other way out that
    # Python sees (an exception in the server) stops the runner too.
    signal.signal(signal.SIGHUP, lambda *_: os.kill(os.getpid(), signal.SIGTERM))
    try:
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            log_level=args.log_level,
            timeout_graceful_shutdown=10,
        )
    finally:
        app.state.runner.stop()  # a no-op after the lifespan's own stop
    return 0


def run_submit(args: argparse.Namespace) -> int:
    path = Path(args.spec)
    if not path.is_file():
        raise UsageError(f"no spec file {args.spec!r}")
    client = _client(args)
    text = path.read_text()
    out = client.request(
        "POST", "/v1/jobs", content=text.encode(), headers={"Content-Type": "application/yaml"}
    )
    print(out["id"])
    if args.follow:
        status = _follow(client, out["id"])
        return 0 if status == "succeeded" else 1
    return 0


def run_jobs(args: argparse.Namespace) -> int:
    out = _client(args).request(
        "GET",
        "/v1/jobs",
        params={"limit": args.limit, **({"status": args.status} if args.status else {})},
    )
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    header = f"{'ID':<36} {'STATUS':<10} {'STEP':>9} {'REWARD':>7} {'ACC':>6} {'AGE':>7}"
    print(header)
    for j in out["jobs"]:
        step = f"{j['step']}/{j['max_steps']}"
        print(
            f"{j['id']:<36} {j['status']:<10} {step:>9} {_fmt(j['reward_mean']):>7} "
            f"{_fmt(j['accuracy'], 2):>6} {_age(j['age_s']):>7}"
        )
    if out["total"] > len(out["jobs"]):
        print(f"({len(out['jobs'])} of {out['total']}; --limit for more)")
    return 0


def run_status(args: argparse.Namespace) -> int:
    client = _client(args)
    job = client.request("GET", f"/v1/jobs/{args.job_id}")
    if args.json:
        print(json.dumps(job, indent=2))
        return 0
    print(f"{job['id']}  {job['status']}  step {job['step']}/{job['max_steps']}  "
          f"age {_age(job['age_s'])}  attempt {job['attempt']}")  # fmt: skip
    for name in sorted(job["latest_metrics"]):
        print(f"  {name:<28} {_fmt(job['latest_metrics'][name], 4)}")
    if job.get("error"):
        print(f"error: {job['error']}")
    if args.follow and job["status"] not in TERMINAL:
        status = _follow(client, job["id"], job["max_steps"])
        return 0 if status == "succeeded" else 1
    return 0


def run_cancel(args: argparse.Namespace) -> int:
    job = _client(args).request("POST", f"/v1/jobs/{args.job_id}/cancel")
    print(f"{job['id']} {job['status']}")
    return 0


def run_resume(args: argparse.Namespace) -> int:
    out = _client(args).request("POST", f"/v1/jobs/{args.job_id}/resume")
    print(f"{out['id']} {out['status']} (resuming from its last checkpoint)")
    return 0


def _demo_spec_text(path: str | None = None, max_steps: int | None = None) -> tuple[str, str]:
    """The demo's spec: ``path``, else examples/arithmetic.yaml of the checkout, else the
    JobSpec defaults; ``max_steps`` shortens it."""
    import yaml

    from rlvr.api.routes.system import examples_dir
    from rlvr.config import JobSpec

    source = Path(path) if path else examples_dir() / "arithmetic.yaml"
    if path and not source.is_file():
        raise UsageError(f"no spec file {path!r}")
    if source.is_file():
        text, origin = source.read_text(), str(source)
    else:
        spec = JobSpec(name="arithmetic-demo").model_dump(mode="json")
        text, origin = yaml.safe_dump(spec, sort_keys=False), "JobSpec defaults"
    if max_steps is not None:
        data = yaml.safe_load(text)
        data.setdefault("algorithm", {})["max_steps"] = max_steps
        text, origin = yaml.safe_dump(data, sort_keys=False), f"{origin}, max_steps={max_steps}"
    return text, origin


def run_demo(args: argparse.Namespace) -> int:
    from rlvr.api.app import create_app
    from rlvr.api.server import BackgroundServer, free_port
    from rlvr.api.settings import Settings

    settings = Settings.from_env(host="127.0.0.1")
    port = free_port(settings.host, args.port or settings.port)
    server = BackgroundServer(create_app(settings), settings.host, port).start()
    url = server.url
    print(f"rlvr service: {url}   dashboard: {url}/   API docs: {url}/docs", flush=True)
    try:
        client = _Client(url, settings.api_token)
        text, origin = _demo_spec_text(args.spec, args.max_steps)
        out = client.request(
            "POST", "/v1/jobs", content=text.encode(), headers={"Content-Type": "application/yaml"}
        )
        job = client.request("GET", f"/v1/jobs/{out['id']}")
        print(f"submitted {out['id']} ({origin}); starting Ray and the trainer ...", flush=True)
        print(f"watch it learn: {url}/#/jobs/{out['id']}", flush=True)
        status = _follow(client, out["id"], job["max_steps"])
        final = client.request("GET", f"/v1/jobs/{out['id']}")
        print(
            f"{out['id']} {status} at step {final['step']}: reward {_fmt(final['reward_mean'])}, "
            f"accuracy {_fmt(final['accuracy'])}, eval accuracy {_fmt(final['eval_accuracy'])}"
        )
        print(f"dashboard: {url}/#/jobs/{out['id']}", flush=True)
        if args.keep_serving or (args.keep_serving is None and sys.stdin.isatty()):
            print("serving until Ctrl-C", flush=True)
            while server.alive:
                time.sleep(1.0)
        return 0 if status == "succeeded" else 1
    finally:
        server.stop()


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the REST API, dashboard and job runner")
    p.add_argument("--host", default=None, help="bind address (default $RLVR_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="default $RLVR_PORT or 8000")
    p.add_argument(
        "--db", default=None, help="SQLAlchemy URL or SQLite file (default $RLVR_DB_URL)"
    )
    p.add_argument(
        "--ray-address",
        default=None,
        help="Ray Jobs API URL (default $RAY_ADDRESS, else a local head)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run_serve)

    p = sub.add_parser("submit", help="submit a job spec (YAML/JSON) to the service")
    p.add_argument("spec", help="path to the spec file")
    p.add_argument("--follow", "-f", action="store_true", help="print progress until it ends")
    _add_client_args(p)
    p.set_defaults(func=run_submit)

    p = sub.add_parser("jobs", help="list jobs")
    p.add_argument("--status", choices=["queued", "running", "succeeded", "failed", "cancelled"])
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    _add_client_args(p)
    p.set_defaults(func=run_jobs)

    p = sub.add_parser("status", help="a job's status and latest metrics")
    p.add_argument("job_id")
    p.add_argument("--follow", "-f", action="store_true", help="print progress until it ends")
    p.add_argument("--json", action="store_true")
    _add_client_args(p)
    p.set_defaults(func=run_status)

    p = sub.add_parser("cancel", help="stop a job")
    p.add_argument("job_id")
    _add_client_args(p)
    p.set_defaults(func=run_cancel)

    p = sub.add_parser("resume", help="continue a failed/cancelled job from its last checkpoint")
    p.add_argument("job_id")
    _add_client_args(p)
    p.set_defaults(func=run_resume)

    p = sub.add_parser("demo", help="serve + submit the arithmetic demo + follow it")
    p.add_argument("--port", type=int, default=None, help="default $RLVR_PORT or 8000 (or free)")
    p.add_argument("--spec", default=None, help="default: examples/arithmetic.yaml")
    p.add_argument("--max-steps", type=int, default=None, help="shorten the demo job")
    p.add_argument(
        "--keep-serving",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep the dashboard up after the job ends (default: when run in a terminal)",
    )
    p.set_defaults(func=run_demo)
