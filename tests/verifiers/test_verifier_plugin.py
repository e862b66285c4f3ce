"""The plugin example installs with pip, then appears in list_verifiers() and works through
`rlvr verify` (whose pool worker must resolve the entry point by itself)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
PLUGIN = ROOT / "examples" / "verifier_plugin"


def _pip(*args: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "-q", *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr


@pytest.fixture
def installed_plugin(tmp_path):
    # cwd elsewhere: the source folder must not shadow the installed package
    _pip("install", "--no-deps", "--no-build-isolation", "-e", str(PLUGIN))
    try:
        yield
    finally:
        _pip("uninstall", "-y", "rlvr-verifier-example")


@pytest.mark.slow
def test_installed_plugin_is_listed_and_works_through_the_cli(installed_plugin, tmp_path):
    listed = subprocess.run(
        [sys.executable, "-c", "import json; from verifiers import list_verifiers; print(json.dumps([i.__dict__ for i in list_verifiers()]))"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    infos = {i["name"]: i for i in json.loads(listed.stdout)}
    assert "exact_answer" in infos and "example plugin" in infos["exact_answer"]["description"]

    def cli(completion: str, reference: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "rlvr", "verify", "--verifier", "exact_answer", "--completion", completion, "--reference", reference],
            capture_output=True, text=True, timeout=120, cwd=ROOT,
        )  # fmt: skip

    right = cli("<think>capital of France</think><answer> paris </answer>", "Paris")
    assert right.returncode == 0, right.stderr
    assert json.loads(right.stdout) == {
        "score": 1.0,
        "passed": True,
        "reason": "ok",
        "details": {"extracted": "paris"},
    }
    wrong = cli("<think>r</think><answer>Lyon</answer>", "Paris")
    assert json.loads(wrong.stdout)["reason"] == "mismatch"
    bad = cli("<answer>Paris</answer>", " ")
    assert bad.returncode == 2 and "exact_answer reference must be a non-empty string" in bad.stderr

    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(PLUGIN / "tests")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert tests.returncode == 0, tests.stdout + tests.stderr
