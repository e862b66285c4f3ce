"""The verifier benchmarks run end to end on tiny inputs and write their JSON."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=ROOT
    )


@pytest.mark.slow
def test_bench_verifiers_prints_a_table_and_writes_json(tmp_path):
    out = tmp_path / "verifiers.json"
    proc = _run(
        "bench/verifiers.py", "--prompts", "4", "--group", "2", "--workers", "1", "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    assert "math_verify direct" in proc.stdout and "rlvr pool, batched" in proc.stdout
    report = json.loads(out.read_text())
    assert report["items"]["mix"] == 8
    assert report["paths"]["rlvr pool, 1 call/item, 1 worker"]["mix"]["per_cpu_s"] > 0


@pytest.mark.slow
def test_parity_bench_reads_labelled_pairs_out_of_test_files(tmp_path):
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_sample.py").write_text(
        textwrap.dedent(
            """
            import pytest

            @pytest.mark.parametrize("gold,pred,expected", [("$1/2$", "$0.5$", 1), ("$3$", "$4$", 0)])
            def test_pairs(gold, pred, expected):
                assert compare_strings(gold, pred, match_types=["latex", "expr"]) == expected

            @pytest.mark.parametrize("gold, pred, strict, expected", [("$f(x)$", "$f(y)$", False, 1)])
            def test_strict(gold, pred, strict, expected):
                assert compare_strings(gold, pred, match_types=["latex"], strict=strict) == expected
            """
        )
    )
    out = tmp_path / "parity.json"
    proc = _run("bench/math_verify_parity.py", "--tests-dir", str(tests), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["pairs"] == 3
    assert report["summary"]["rlvr math (test's options+extractors)"]["agree"] == 3
    assert (
        _run("bench/math_verify_parity.py", "--tests-dir", str(tmp_path / "none")).returncode == 2
    )
