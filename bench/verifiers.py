"""Math verification speed: the service path (VerifierPool) vs calling math-verify directly.

A realistic RL reward batch: P prompts x G completions (G=8 share one gold answer), mostly
``<think>…</think><answer>X</answer>`` with right and wrong answers, some ``\\boxed{}`` and
free-form endings, a few with no answer; golds are integers, fractions, decimals, roots,
pi, intervals, tuples, equations. "Typical" = integer/fraction/decimal golds answered in
an answer tag. Each path scores the same items:

* ``math_verify direct``: ``parse(answer text)``, ``parse("$gold$")``, ``verify`` on the main
  thread with math-verify's own (signal) timeouts: what a trainer does without a service
  (the answer text: after ``</think>``, the answer tags blanked out, since math-verify's
  number regex does not match right after ``<answer>``);
* ``rlvr in-process``: our verifier's work without the pool (extraction, readings, the
  caches of gold answers and of short answers' readings, cold at the start), to separate it
  from the cost of the process boundary;
* ``rlvr pool, 1 call/item``: one ``verify_many([item])`` at a time on a warm 1-worker pool:
  per-call latency with the IPC round trip;
* ``rlvr pool, batched``: one ``verify_many(all items)`` on W workers: throughput.

    .venv/bin/python bench/verifiers.py [--prompts 128] [--group 8] [--workers 2] [--out ...]

Per-core throughput is items per CPU-second used (the caller plus the pool's workers, read
from /proc), so it stays meaningful on a busy machine; latency is wall clock per call.
Prints a table and writes JSON (default bench/results/verifiers.json).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

# Run as a script, this file's folder (bench/) comes first on sys.path, and this file,
# bench/verifiers.py, would shadow the verifiers package (in pool workers too).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from verifiers import VerifierPool  # noqa: E402

THINKS = [
    "Let me work it out step by step. First try 17; that fails the check, so recompute.",
    "Set up the equation, isolate the unknown, and verify by substituting back.",
    "Compute each part separately: 12 + 30 = 42, then simplify the fraction.",
]


def _gold_and_wrong(rng: random.Random) -> tuple[str, str, str, bool]:
    """(kind, gold, a right answer as written, a wrong answer, typical?)."""
    kind = rng.choices(
        ["int", "frac", "dec", "sqrt", "pi", "interval", "tuple", "eq"],
        weights=[45, 15, 10, 8, 6, 6, 5, 5],
    )[0]
    a, b = rng.randint(2, 999), rng.randint(2, 60)
    if kind == "int":
        n = rng.randint(-50, 5000)
        return kind, str(n), rng.choice([str(n), f"{n:,}"]), str(n + rng.choice([-1, 1, 10])), True
    if kind == "frac":
        return (
            kind,
            f"\\frac{{{a}}}{{{b}}}",
            rng.choice([f"{a}/{b}", f"\\frac{{{a}}}{{{b}}}"]),
            f"{a + 1}/{b}",
            True,
        )
    if kind == "dec":
        x = round(rng.uniform(0, 100), 2)
        return kind, str(x), f"{x:.2f}", f"{x + 0.5:.2f}", True
    if kind == "sqrt":
        return kind, f"{b}\\sqrt{{{a}}}", f"{b}\\sqrt{{{a}}}", f"{b + 1}\\sqrt{{{a}}}", False
    if kind == "pi":
        return kind, f"\\frac{{{b}\\pi}}{{3}}", f"{b}\\pi/3", f"{b}\\pi/4", False
    if kind == "interval":
        return kind, f"[{-b}, {a})", f"[{-b},{a})", f"({-b},{a})", False
    if kind == "tuple":
        return kind, f"({a}, {b})", f"({a},{b})", f"({b},{a})", False
    return kind, f"x={a}", rng.choice([f"x = {a}", str(a)]), f"x = {a + 2}", False


def build_items(prompts: int, group: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    items = []
    for _ in range(prompts):
        kind, gold, right, wrong, typical = _gold_and_wrong(rng)
        for _ in range(group):
            answer = right if rng.random() < 0.5 else wrong
            think = f"<think>{rng.choice(THINKS)}</think>\n"
            form = rng.choices(["tag", "boxed", "text", "none"], weights=[80, 10, 5, 5])[0]
            if form == "tag":
                completion = f"{think}<answer>{answer}</answer>"
            elif form == "boxed":
                completion = f"{think}So the final answer is $\\boxed{{{answer}}}$."
            elif form == "text":
                completion = f"{think}The final answer is ${answer}$."
            else:
                completion = f"{think}I could not finish."
            items.append(
                {
                    "kind": kind,
                    "gold": gold,
                    "completion": completion,
                    "typical": typical and form == "tag",
                }
            )
    return items


def _worker_cpu_s(pool: VerifierPool) -> float:
    """CPU seconds used so far by the pool's worker processes (user + system)."""
    total = 0
    for pid in pool.worker_pids():
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def _summary(n: int, wall: float, cpu: float, latencies: list[float] | None) -> dict:
    out = {"items": n, "per_cpu_s": n / cpu, "per_wall_s": n / wall}
    if latencies:
        ordered = sorted(latencies)
        out["p50_ms"] = 1000 * statistics.median(ordered)
        out["p99_ms"] = 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return out


def run_direct(items: list[dict]) -> tuple[dict, list[bool]]:
    from math_verify import parse, verify

    parse("$1$"), verify(parse("$1$"), parse("1"))  # compile regexes, import sympy paths
    latencies, passed = [], []
    t0, c0 = time.perf_counter(), time.process_time()
    for item in items:
        s = time.perf_counter()
        answer = item["completion"].rpartition("</think>")[2]
        answer = answer.replace("<answer>", " ").replace("</answer>", " ")
        ok = verify(parse(f"${item['gold']}$"), parse(answer))
        latencies.append(time.perf_counter() - s)
        passed.append(bool(ok))
    return _summary(
        len(items), time.perf_counter() - t0, time.process_time() - c0, latencies
    ), passed


def run_in_process(items: list[dict]) -> dict:
    from verifiers.math import MathVerifier, _parsed_gold, _read_bare_kept

    verifier = MathVerifier()
    verifier._verify_here("<answer>1</answer>", "1")
    _parsed_gold.cache_clear()  # cold caches: only the batch's own repeats hit them
    _read_bare_kept.cache_clear()
    latencies = []
    t0, c0 = time.perf_counter(), time.process_time()
    for item in items:
        s = time.perf_counter()
        verifier._verify_here(item["completion"], item["gold"])
        latencies.append(time.perf_counter() - s)
    return _summary(len(items), time.perf_counter() - t0, time.process_time() - c0, latencies)


def run_pool(items: list[dict], workers: int, per_call: bool) -> tuple[dict, list[bool]]:
    """A fresh, warm pool (no cached golds); one call per item, or one batched call."""
    requests = [("math", {}, item["completion"], item["gold"]) for item in items]
    with VerifierPool(workers=workers, timeout_s=10.0) as pool:
        pool.verify_many([("math", {}, "<answer>1</answer>", "warm-up 1")] * workers)
        latencies: list[float] = []
        t0, c0, w0 = time.perf_counter(), time.process_time(), _worker_cpu_s(pool)
        if per_call:
            verdicts = []
            for request in requests:
                s = time.perf_counter()
                verdicts += pool.verify_many([request])
                latencies.append(time.perf_counter() - s)
        else:
            verdicts = pool.verify_many(requests)
        wall = time.perf_counter() - t0
        cpu = time.process_time() - c0 + _worker_cpu_s(pool) - w0
    return _summary(len(items), wall, cpu, latencies), [v.passed for v in verdicts]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument(
        "--group", type=int, default=8, help="completions per prompt (share a gold)"
    )
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/verifiers.json"))
    args = parser.parse_args()
    if args.prompts < 1 or args.group < 1 or args.workers < 1:
        print("--prompts, --group and --workers must be >= 1", file=sys.stderr)
        return 2

    mix = build_items(args.prompts, args.group, args.seed)
    datasets = {"mix": mix, "typical": [item for item in mix if item["typical"]]}
    results: dict[str, dict[str, dict]] = {}
    agreement = {}
    for label, items in datasets.items():
        direct, direct_passed = run_direct(items)
        per_call, pool_passed = run_pool(items, 1, per_call=True)
        batched, _ = run_pool(items, args.workers, per_call=False)
        results.setdefault("math_verify direct", {})[label] = direct
        results.setdefault("rlvr in-process (no pool)", {})[label] = run_in_process(items)
        results.setdefault("rlvr pool, 1 call/item, 1 worker", {})[label] = per_call
        results.setdefault(f"rlvr pool, batched, {args.workers} workers", {})[label] = batched
        agreement[label] = {
            "direct_passed": sum(direct_passed),
            "rlvr_passed": sum(pool_passed),
            "same_verdict": sum(a == b for a, b in zip(direct_passed, pool_passed, strict=True)),
        }

    load = os.getloadavg()[0]
    print(
        f"{len(mix)} items ({args.prompts} prompts x {args.group}), {len(datasets['typical'])} typical; "
        f"cpus={os.cpu_count()}, load average {load:.1f}\n"
        "per core = items per CPU-second used (caller + pool workers): robust to a busy machine;\n"
        "latency = wall clock per call, on this machine as loaded.\n"
    )
    header = f"{'path':36} {'mix/core/s':>10} {'p50 ms':>7} {'p99 ms':>7} | {'typical/core/s':>14} {'p50 ms':>7} {'p99 ms':>7}"
    print(header)
    print("-" * len(header))

    def cell(row: dict, key: str) -> str:
        return f"{row[key]:.2f}" if key in row else "-"

    for name, row in results.items():
        m, t = row["mix"], row["typical"]
        print(
            f"{name:36} {m['per_cpu_s']:>10.0f} {cell(m, 'p50_ms'):>7} {cell(m, 'p99_ms'):>7} | "
            f"{t['per_cpu_s']:>14.0f} {cell(t, 'p50_ms'):>7} {cell(t, 'p99_ms'):>7}"
        )
    direct, call = results["math_verify direct"], results["rlvr pool, 1 call/item, 1 worker"]
    batched = results[f"rlvr pool, batched, {args.workers} workers"]
    ratios = {
        "typical_p50_latency_pool_call_over_direct": call["typical"]["p50_ms"]
        / direct["typical"]["p50_ms"],
        "typical_per_core_direct_over_pool_call": direct["typical"]["per_cpu_s"]
        / call["typical"]["per_cpu_s"],
        "typical_per_core_direct_over_pool_batched": direct["typical"]["per_cpu_s"]
        / batched["typical"]["per_cpu_s"],
        "mix_per_core_direct_over_pool_batched": direct["mix"]["per_cpu_s"]
        / batched["mix"]["per_cpu_s"],
    }
    print("\nslowdown of the service path vs math-verify direct (>1 = slower):")
    for name, value in ratios.items():
        print(f"  {name:45} {value:.2f}x")
    # Not accuracy (no labels here; see tests/data/math_cases.jsonl): agreement, for the record.
    for label, a in agreement.items():
        print(
            f"{label}: passed direct {a['direct_passed']}, rlvr {a['rlvr_passed']}; "
            f"same verdict on {a['same_verdict']}/{len(datasets[label])}"
        )

    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} cpus={os.cpu_count()} python {platform.python_version()}",
        "load_average_1m": load,
        "command": " ".join(["bench/verifiers.py", *sys.argv[1:]]),
        "items": {label: len(items) for label, items in datasets.items()},
        "paths": results,
        "ratios": ratios,
        "agreement": agreement,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
