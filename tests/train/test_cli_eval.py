"""``rlvr eval``: bad input exits 2 naming the flag; a run directory becomes its base model
plus every checkpoint (an eval-vs-step curve), evaluated for real on the local Ray cluster."""

from __future__ import annotations

import json
import shutil

import pytest

from rlvr.cli import main
from rlvr.config import JobSpec
from rlvr.train.evaluate import eval_targets


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, random_model_dir):
    """A run directory laid out as the trainer writes it: spec.json and one checkpoint."""
    run = tmp_path_factory.mktemp("run")
    spec = JobSpec.model_validate(
        {
            "model": {"path": str(random_model_dir)},
            "data": {"eval": "builtin:arithmetic?n=3&seed=1"},
            "reward": {"workers": 1},
            "rollout": {"engine": "hf", "max_new_tokens": 8},
        }
    )
    (run / "spec.json").write_text(spec.model_dump_json())
    step = run / "checkpoints" / "step_2"
    shutil.copytree(random_model_dir, step)
    (step / "trainer_state.json").write_text(json.dumps({"weights_version": 2}))
    return run


def test_a_run_dir_is_its_base_model_and_every_checkpoint(run_dir, random_model_dir):
    targets = eval_targets(str(run_dir))
    assert [(t.step, t.model) for t in targets] == [
        (0, str(random_model_dir)),
        (2, str(run_dir / "checkpoints" / "step_2")),
    ]
    assert [t.step for t in eval_targets("tiny:arithmetic")] == [None]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["tiny:arithmetic"], "--data: give at least one eval set"),
        (["tiny:arithmetic", "--data", "builtin:nope"], "--data: builtin:nope"),
        (["tiny:arithmetic", "--data", "builtin:arithmetic", "--samples", "0"], "--samples"),
        (["tiny:arithmetic", "--data", "builtin:arithmetic", "--k", "1,x"], "--k"),
        (["tiny:arithmetic", "--data", "builtin:arithmetic", "--k", "99"], "--k"),
    ],
)
def test_bad_input_exits_2_naming_the_flag(capsys, args, words):
    assert main(["eval", *args]) == 2
    assert words in capsys.readouterr().err


@pytest.mark.slow
def test_eval_of_a_run_dir_gives_one_row_per_checkpoint(ray_cluster, run_dir, capsys):
    code = main(["eval", str(run_dir), "--samples", "2", "--k", "1,2", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sets"] == {"arithmetic": "builtin:arithmetic?n=3&seed=1"}
    assert [r["step"] for r in out["results"]] == [0, 2]
    for r in out["results"]:
        m = r["metrics"]
        assert 0 <= m["eval/arithmetic/pass@1"] <= m["eval/arithmetic/pass@2"] <= 1
        assert "eval/accuracy" in m and m["eval/arithmetic/length_mean"] > 0


NO_RAY_EVAL = """
import json, sys
from rlvr.cli import main

code = main(["eval", *sys.argv[1:]])
print(json.dumps({"code": code, "ray_imported": "ray" in sys.modules}))
"""


@pytest.mark.slow
def test_one_cpu_engine_evaluates_in_process_without_ray_and_as_on_a_cluster(
    ray_cluster, run_dir, capsys, tmp_path
):
    """With no cluster to join, `rlvr eval`'s one HF engine runs in its own process: Ray is
    not even imported, and every number is the one the engine actor gives on a cluster."""
    import os
    import subprocess
    import sys

    args = [str(run_dir), "--samples", "2", "--k", "1,2", "--json"]
    assert main(["eval", *args]) == 0
    on_cluster = json.loads(capsys.readouterr().out)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run(
        [sys.executable, "-c", NO_RAY_EVAL, *args],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    status = json.loads(lines[-1])
    assert status == {"code": 0, "ray_imported": False}
    alone = json.loads("\n".join(lines[:-1]))
    assert [r["step"] for r in alone["results"]] == [r["step"] for r in on_cluster["results"]]
    for a, b in zip(alone["results"], on_cluster["results"], strict=True):
        assert set(a["metrics"]) == set(b["metrics"])
        for key, value in b["metrics"].items():
            if not key.startswith("time/"):
                assert a["metrics"][key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
