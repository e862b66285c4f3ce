"""Parity with math-verify on its own labelled test pairs.

math-verify's test-suite is a few hundred (gold, prediction, expected) triples. This
script reads them out of a checkout's test files (statically, with ``ast``: nothing of
theirs is imported or run), then scores every pair three ways:

* ``direct (as in its tests)``: ``math_verify.parse`` + ``verify`` with exactly the
  extraction configs and options each test uses;
* ``direct (defaults)``: ``parse`` + ``verify`` with math-verify's default configs;
* ``rlvr math``: our ``MathVerifier`` (through a ``VerifierPool``), prediction as the
  completion and gold as the reference, with the test's options and extractors
  (``match_types`` → ``extract``).

    git clone https://github.com/huggingface/Math-Verify /tmp/Math-Verify
    .venv/bin/python bench/math_verify_parity.py --tests-dir /tmp/Math-Verify/tests

Prints a table, lists the pairs where we and math-verify disagree, writes JSON to --out.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import json
import platform
import sys
import time
from pathlib import Path

# Run as a script, this file's folder (bench/) comes first on sys.path, where
# bench/verifiers.py would shadow the verifiers package (in pool workers too).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from verifiers import BadReferenceError, VerifierPool  # noqa: E402

# compare_strings(...) keyword -> MathVerifier option
_OPTION_NAMES = {
    "precision": "float_rounding",
    "strict": "strict",
    "allow_set_relation_comp": "allow_set_relation_comp",
}


def _literal(node: ast.AST):
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def _compare_call(func: ast.FunctionDef) -> ast.Call | None:
    """The ``compare_strings(...)`` or ``verify(...)`` call a test asserts on."""
    for node in ast.walk(func):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("compare_strings", "verify")
        ):
            return node
    return None


def _case_from_call(call: ast.Call, env: dict) -> dict | None:
    """gold, pred and options of one compare call, with names bound from ``env``."""

    def value(node: ast.AST):
        if isinstance(node, ast.Name) and node.id in env:
            return env[node.id]
        if call.func.id == "verify" and isinstance(node, ast.Call) and node.args:
            return value(node.args[0])  # verify(parse(gold), parse(pred))
        return _literal(node)

    if len(call.args) < 2:
        return None
    gold, pred = value(call.args[0]), value(call.args[1])
    if not (isinstance(gold, str) and isinstance(pred, str)):
        return None
    case = {"gold": gold, "pred": pred, "match_types": None, "options": {}}
    if call.func.id == "compare_strings":
        case["match_types"] = ["latex", "expr"]
        for kw in call.keywords:
            v = value(kw.value)
            if kw.arg == "match_types" and isinstance(v, list):
                case["match_types"] = v
            elif kw.arg in _OPTION_NAMES and v is not None:
                case["options"][_OPTION_NAMES[kw.arg]] = v
        if len(call.args) > 2 and isinstance(value(call.args[2]), list):
            case["match_types"] = value(call.args[2])
    return case


def extract_pairs(tests_dir: Path) -> list[dict]:
    """Every (gold, pred, expected) math-verify's tests check, with the test's options."""
    pairs = []
    for path in sorted(tests_dir.glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for func in (n for n in tree.body if isinstance(n, ast.FunctionDef)):
            call = _compare_call(func)
            if call is None:
                continue
            for deco in func.decorator_list:
                if not (
                    isinstance(deco, ast.Call) and getattr(deco.func, "attr", "") == "parametrize"
                ):
                    continue
                names = _literal(deco.args[0])
                if isinstance(names, str):
                    names = [n.strip() for n in names.split(",")]
                if not names or "gold" not in names or "pred" not in names:
                    continue
                expected_name = "expected" if "expected" in names else "result"
                for row in getattr(deco.args[1], "elts", []):
                    values = _literal(row)
                    if not isinstance(values, tuple) or len(values) != len(names):
                        continue
                    env = dict(zip(names, values, strict=True))
                    case = _case_from_call(call, env)
                    if case is not None and expected_name in env:
                        pairs.append(
                            {
                                **case,
                                "expected": bool(env[expected_name]),
                                "test": f"{path.name}::{func.name}",
                            }
                        )
            # Plain asserts: assert compare_strings("a", "b", ...) == 1
            for node in ast.walk(func):
                if isinstance(node, ast.Assert) and isinstance(node.test, ast.Compare):
                    left, right = node.test.left, node.test.comparators[0]
                    if (
                        isinstance(left, ast.Call)
                        and getattr(left.func, "id", "") == "compare_strings"
                    ):
                        case = _case_from_call(left, {})
                        expected = _literal(right)
                        if case is not None and expected is not None and not func.decorator_list:
                            pairs.append(
                                {
                                    **case,
                                    "expected": bool(expected),
                                    "test": f"{path.name}::{func.name}",
                                }
                            )
    return pairs


def direct(case: dict, as_in_tests: bool) -> bool:
    """math-verify called directly (in this process, with its own signal timeouts)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    if as_in_tests and case["match_types"] is not None:
        configs = []
        for kind in case["match_types"]:
            if kind == "latex":
                configs.append(LatexExtractionConfig(boxed_match_priority=0))
            elif kind == "expr":
                configs.append(ExprExtractionConfig())
    else:
        configs = [LatexExtractionConfig(), ExprExtractionConfig()]
    opts = case["options"]
    return bool(
        verify(
            parse(case["gold"], configs),
            parse(case["pred"], configs),
            float_rounding=opts.get("float_rounding", 6),
            strict=opts.get("strict", True),
            allow_set_relation_comp=opts.get("allow_set_relation_comp", False),
        )
    )


def ours(pairs: list[dict], pool: VerifierPool, per_test_extract: bool) -> list[tuple[bool, str]]:
    # The extractors a test chose (match_types) are part of its case; with
    # per_test_extract=False ours always uses its default (latex and expr).
    items = [
        (
            "math",
            {
                **p["options"],
                "extract": (per_test_extract and p["match_types"]) or ["latex", "expr"],
            },
            p["pred"],
            p["gold"],
        )
        for p in pairs
    ]
    try:
        verdicts = pool.verify_many(items)
        return [(v.passed, v.reason) for v in verdicts]
    except BadReferenceError:  # some gold we reject: score one by one to see which
        out = []
        for item in items:
            try:
                v = pool.verify_many([item])[0]
                out.append((v.passed, v.reason))
            except BadReferenceError:
                out.append((False, "reference_error"))
        return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tests-dir", required=True, type=Path, help="math-verify checkout's tests/ folder"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/math_verify_parity.json"))
    parser.add_argument("--timeout", type=float, default=5.0, help="per-item timeout of our pool")
    args = parser.parse_args()
    if not args.tests_dir.is_dir():
        print(f"--tests-dir {args.tests_dir} is not a directory", file=sys.stderr)
        return 2
    pairs = extract_pairs(args.tests_dir)
    if not pairs:
        print(f"no (gold, pred, expected) pairs found under {args.tests_dir}", file=sys.stderr)
        return 2

    t0 = time.perf_counter()
    as_tests = [direct(p, as_in_tests=True) for p in pairs]
    defaults = [direct(p, as_in_tests=False) for p in pairs]
    t1 = time.perf_counter()
    with VerifierPool(workers=2, timeout_s=args.timeout) as pool:
        mine = ours(pairs, pool, per_test_extract=True)
        mine_default = ours(pairs, pool, per_test_extract=False)
    t2 = time.perf_counter()

    n = len(pairs)
    expected = [p["expected"] for p in pairs]
    rows = [
        ("math-verify direct (as in its tests)", as_tests),
        ("math-verify direct (default configs)", defaults),
        ("rlvr math (test's options+extractors)", [m[0] for m in mine]),
        ("rlvr math (test's options, default extract)", [m[0] for m in mine_default]),
    ]
    print(f"math-verify's labelled pairs: {n} from {args.tests_dir}\n")
    print(f"{'scorer':44} {'agree':>7} {'accuracy':>9}")
    summary = {}
    for name, got in rows:
        agree = sum(g == e for g, e in zip(got, expected, strict=True))
        summary[name] = {"agree": agree, "accuracy": agree / n}
        print(f"{name:44} {agree:>7} {agree / n:>9.2%}")

    ours_only_wrong = [
        {**p, "direct": d, "ours": m[0], "reason": m[1]}
        for p, d, m in zip(pairs, as_tests, mine, strict=True)
        if m[0] != p["expected"] and d == p["expected"]
    ]
    ours_only_right = [
        {**p, "direct": d, "ours": m[0], "reason": m[1]}
        for p, d, m in zip(pairs, as_tests, mine, strict=True)
        if m[0] == p["expected"] and d != p["expected"]
    ]
    print(f"\nwe get wrong, math-verify (as in its tests) right: {len(ours_only_wrong)}")
    for c in ours_only_wrong:
        print(
            f"  {c['test']}: gold={c['gold'][:60]!r} pred={c['pred'][:60]!r} expected={c['expected']} ours={c['reason']}"
        )
    print(f"we get right, math-verify (as in its tests) wrong: {len(ours_only_right)}")
    for c in ours_only_right:
        print(
            f"  {c['test']}: gold={c['gold'][:60]!r} pred={c['pred'][:60]!r} expected={c['expected']}"
        )
    print(f"\n(direct: {t1 - t0:.1f}s for both configs; ours: {t2 - t1:.1f}s for both)")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    import math_verify

    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.processor() or ''} python {platform.python_version()}".strip(),
        "math_verify_version": getattr(math_verify, "__version__", "unknown"),
        "tests_dir": str(args.tests_dir),
        "pairs": n,
        "summary": summary,
        "ours_wrong_direct_right": ours_only_wrong,
        "ours_right_direct_wrong": ours_only_right,
    }
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
