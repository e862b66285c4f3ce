"""Sandbox speed, per backend: latency of a trivial run and of a 10-case code task, and
throughput at full concurrency.

* ``python3 -I -S (no sandbox)``: the floor, the bare interpreter start-up;
* ``trivial run``: ``run_python("print(1)")`` one at a time: p50/p95 latency;
* ``10-case function task``: ``CodeVerifier.verify`` of a correct solution against ten
  ``assert f(x) == <literal>`` cases (one sandbox run, judged in the parent);
* ``10-case stdio task``: the same verifier, ten stdin/stdout cases (ten runs in parallel);
* ``throughput @ C``: ``run_many`` of N trivial runs with C slots: runs/s;
* docker only, ``cold run (new container)``: a trivial run whose limits have no warm
  container, i.e. container start + run (every other row reuses warm containers).

    .venv/bin/python bench/sandbox.py [--samples 51] [--runs 400] [--concurrency 4,8,16] \\
        [--backends local,docker] [--image IMAGE] [--out bench/results/sandbox.json]

The docker backend talks to the engine of ``DOCKER_HOST`` and runs ``--image`` (default
``RLVR_SANDBOX_IMAGE``, else ``python:3.11-slim``); ``python3 deploy/engine.py up`` starts
an engine and builds a Debian image where there is no registry.

Prints a table and writes JSON. A backend that cannot run here is reported unavailable.
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
import time
from pathlib import Path

# Run as a script, bench/ comes first on sys.path and this file would shadow the package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from sandbox import Limits, RunSpec, SandboxUnavailable, get_sandbox  # noqa: E402
from verifiers.code import CodeVerifier  # noqa: E402

FUNCTION_TASK = {
    "test_code": "\n".join(f"assert square({i}) == {i * i}" for i in range(10)),
    "entry_point": "square",
}
FUNCTION_SOLUTION = "<think>square it</think>\n```python\ndef square(x):\n    return x * x\n```"
STDIO_TASK = {"tests": [{"stdin": f"{i}\n", "stdout": f"{i * i}\n"} for i in range(10)]}
STDIO_SOLUTION = "<think>read, square</think>\n```python\nx = int(input())\nprint(x * x)\n```"


def _percentiles(samples_s: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples_s)
    return {
        "p50_ms": statistics.median(ms),
        "p95_ms": ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))],
        "min_ms": ms[0],
        "n": len(ms),
    }


def _time_each(fn, n: int) -> list[float]:
    fn()  # warm (first-use costs: cgroups, imports)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def bench_floor(python: str, n: int) -> dict:
    cmd = [python, "-I", "-S", "-c", "print(1)"]
    return _percentiles(_time_each(lambda: subprocess.run(cmd, capture_output=True, check=True), n))


def bench_backend(
    backend: str, samples: int, runs: int, concurrency: list[int], image: str | None = None
) -> dict:
    options = {"image": image} if backend == "docker" else {}
    try:
        sb = get_sandbox(backend, concurrency=max(concurrency), **options)
    except SandboxUnavailable as exc:
        return {"available": False, "reason": str(exc)}
    rows: dict = {"available": True, "isolation": getattr(sb, "isolation", {})}
    if backend == "docker":
        rows["isolation"] = {"image": sb.image, "containers": "warm, reused after cleanup"}
    try:

        def trivial() -> None:
            r = sb.run_python("print(1)")
            assert r.stdout == "1\n", r

        rows["trivial run"] = _percentiles(_time_each(trivial, samples))
        verifier = CodeVerifier(sandbox=sb)

        def function_task() -> None:
            v = verifier.verify(FUNCTION_SOLUTION, FUNCTION_TASK)
            assert v.score == 1.0, v

        def stdio_task() -> None:
            v = verifier.verify(STDIO_SOLUTION, STDIO_TASK)
            assert v.score == 1.0, v

        rows["10-case function task"] = _percentiles(_time_each(function_task, samples))
        rows["10-case stdio task"] = _percentiles(_time_each(stdio_task, max(5, samples // 3)))
        if backend == "docker":
            fresh = iter(range(64, 1 << 20))  # memory_mb: a limits profile never seen before

            def cold() -> None:
                r = sb.run_python("print(1)", limits=Limits(memory_mb=next(fresh)))
                assert r.stdout == "1\n", r

            rows["cold run (new container)"] = _percentiles(_time_each(cold, max(5, samples // 5)))
    finally:
        sb.close()
    for c in concurrency:
        sb = get_sandbox(backend, concurrency=c, **options)
        try:
            sb.run_many([RunSpec("print(1)")] * c)  # warm every slot
            t0 = time.perf_counter()
            results = sb.run_many([RunSpec("print(1)")] * runs)
            elapsed = time.perf_counter() - t0
        finally:
            sb.close()
        assert all(r.stdout == "1\n" for r in results)
        rows[f"throughput @ {c}"] = {"runs_per_s": runs / elapsed, "runs": runs, "seconds": elapsed}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=51, help="latency samples per row")
    parser.add_argument("--runs", type=int, default=400, help="runs per throughput row")
    parser.add_argument("--concurrency", default="4,8,16", help="slot counts for throughput")
    parser.add_argument("--backends", default="local,docker")
    parser.add_argument("--image", help="the docker backend's image")
    parser.add_argument("--out", type=Path, default=Path("bench/results/sandbox.json"))
    args = parser.parse_args()
    concurrency = [int(c) for c in args.concurrency.split(",")]

    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "python_in_sandbox": "/usr/bin/python3",
            "loadavg_at_start": os.getloadavg(),
        },
        "command": " ".join(["python", *sys.argv]),
        "floor": {"python3 -I -S (no sandbox)": bench_floor("/usr/bin/python3", args.samples)},
        "backends": {},
    }
    for backend in args.backends.split(","):
        report["backends"][backend] = bench_backend(
            backend, args.samples, args.runs, concurrency, args.image
        )
    report["machine"]["loadavg_at_end"] = os.getloadavg()

    print(f"{'backend':8s} {'what':34s} {'p50 ms':>8s} {'p95 ms':>8s} {'runs/s':>8s}")
    for name, row in report["floor"].items():
        print(f"{'-':8s} {name:34s} {row['p50_ms']:8.1f} {row['p95_ms']:8.1f} {'':>8s}")
    for backend, rows in report["backends"].items():
        if not rows["available"]:
            print(f"{backend:8s} unavailable: {rows['reason'][:90]}")
            continue
        for name, row in rows.items():
            if name in ("available", "isolation"):
                continue
            if "runs_per_s" in row:
                print(f"{backend:8s} {name:34s} {'':>8s} {'':>8s} {row['runs_per_s']:8.0f}")
            else:
                print(f"{backend:8s} {name:34s} {row['p50_ms']:8.1f} {row['p95_ms']:8.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
