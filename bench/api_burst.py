"""API latency under a bounded burst of slow verifies.

A real service (uvicorn, in a subprocess, no Ray: only the API is measured) gets ``--burst``
concurrent ``POST /v1/verify`` calls whose program sleeps in the sandbox past the request's
deadline, while a prober calls ``GET /healthz`` and ``GET /v1/jobs`` every 0.1 s. Reported:
how the verifies were answered (200 with a timeout verdict, or 429 beyond the verify workers)
and how long the other routes took meanwhile. Before the bounds, 48 such calls made every
other route wait ~47 s.

    .venv/bin/python bench/api_burst.py [--burst 48] [--workers 2] [--timeout-s 3] \\
        [--out bench/results/api_burst.json]

Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

SERVER = """
import sys, uvicorn
from rlvr.api.app import create_app
from rlvr.api.settings import Settings
tmp, port, workers, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
settings = Settings(db_url=f"sqlite:///{tmp}/rlvr.db", runs_dir=f"{tmp}/runs",
                    data_roots=[tmp], model_roots=[tmp],
                    verify_workers=workers, verify_timeout_s=timeout)
uvicorn.run(create_app(settings, start_runner=False), host="127.0.0.1", port=port,
            log_level="warning")
"""
SLEEPER = "```python\nimport time\ntime.sleep(60)\nprint(input())\n```"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stats(samples_s: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples_s) or [float("nan")]
    return {
        "n": len(samples_s),
        "p50_ms": statistics.median(ms),
        "p95_ms": ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))],
        "max_ms": ms[-1],
    }


def run(burst: int, workers: int, timeout_s: float) -> dict:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(
            [sys.executable, "-c", SERVER, tmp, str(port), str(workers), str(timeout_s)]
        )
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    httpx.get(f"{url}/healthz", timeout=2)
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise RuntimeError("the service did not start") from None
                    time.sleep(0.2)
            # Start the verify workers first: the burst measures a warm service.
            warm = {"verifier": "think_format", "completion": "<think>a</think>b", "reference": 0}
            httpx.post(f"{url}/v1/verify", json=warm, timeout=120)
            return _burst(url, burst, timeout_s)
        finally:
            server.terminate()
            server.wait(timeout=60)


def _burst(url: str, burst: int, timeout_s: float) -> dict:
    body = {
        "verifier": "code",
        "completion": SLEEPER,
        "reference": {"tests": [{"stdin": "1\n", "stdout": "1\n"}] * 4, "timeout_s": 10},
    }
    verifies: list[tuple[int, float, str]] = []
    probes: dict[str, list[float]] = {"/healthz": [], "/v1/jobs": []}
    done = threading.Event()

    ready = threading.Barrier(burst)

    def verify() -> None:
        with httpx.Client(timeout=300) as http:  # (built before the clock starts)
            ready.wait()
            start = time.monotonic()
            r = http.post(f"{url}/v1/verify", json=body)
        reason = r.json().get("reason", "") if r.status_code == 200 else ""
        verifies.append((r.status_code, time.monotonic() - start, reason))

    def probe() -> None:
        with httpx.Client(base_url=url, timeout=300) as http:
            while not done.is_set():
                for path, samples in probes.items():
                    start = time.monotonic()
                    http.get(path).raise_for_status()
                    samples.append(time.monotonic() - start)
                time.sleep(0.1)

    prober = threading.Thread(target=probe)
    prober.start()
    threads = [threading.Thread(target=verify) for _ in range(burst)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - start
    time.sleep(0.5)
    done.set()
    prober.join()
    codes = [c for c, _, _ in verifies]
    return {
        "burst": burst,
        "verify_timeout_s": timeout_s,
        "wall_s": wall,
        "answered": {str(c): codes.count(c) for c in sorted(set(codes))},
        "timeout_verdicts": sum(reason == "timeout" for _, _, reason in verifies),
        "verify_200": _stats([s for c, s, _ in verifies if c == 200]),
        "verify_429": _stats([s for c, s, _ in verifies if c == 429]),
        **{f"probe {path}": _stats(samples) for path, samples in probes.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--burst", type=int, default=48)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout-s", type=float, default=3.0)
    ap.add_argument("--out", default="bench/results/api_burst.json")
    args = ap.parse_args()
    if not 1 <= args.burst <= 256:
        raise SystemExit("--burst must be in 1..256 (a bounded burst)")
    result = run(args.burst, args.workers, args.timeout_s)
    print(f"{args.burst} concurrent slow verifies, {args.workers} verify workers, "
          f"deadline {args.timeout_s:g} s: answered {result['answered']} in "
          f"{result['wall_s']:.1f} s ({result['timeout_verdicts']} timeout verdicts)")  # fmt: skip
    print(f"{'calls':<28} {'n':>5} {'p50 ms':>9} {'p95 ms':>9} {'max ms':>9}")
    for key in ("verify_200", "verify_429", "probe /healthz", "probe /v1/jobs"):
        s = result[key]
        print(f"{key:<28} {s['n']:>5} {s['p50_ms']:>9.1f} {s['p95_ms']:>9.1f} {s['max_ms']:>9.1f}")
    record = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_average": os.getloadavg(),
        "args": vars(args),
        **result,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
