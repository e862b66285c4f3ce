"""``rlvr plan`` as users run it: exit codes and what it prints."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rlvr.cli import main


@pytest.fixture
def spec_file(tmp_path):
    def write(text: str):
        path = tmp_path / "spec.yaml"
        path.write_text(text)
        return str(path)

    return write


def test_plan_prints_every_actor_and_its_gpu_memory(spec_file, capsys):
    path = spec_file("model: {path: Qwen/Qwen2.5-1.5B-Instruct}\nrollout: {replicas: 2}\n")
    assert main(["plan", path, "--gpus", "4", "--gpu-memory-gb", "80"]) == 0
    out = capsys.readouterr().out
    assert "layout split" in out and "weight sync nccl" in out
    for line in ("engine-0   node 0 GPU 0", "engine-1   node 0 GPU 1", "learner-0  node 0 GPU 2"):
        assert line in out
    assert "node 0 GPU 2:" in out and "optimizer" in out and "kv_cache" in out


def test_plan_json_and_exit_1_when_the_job_does_not_fit(spec_file, capsys):
    path = spec_file("model: {path: Qwen/Qwen2.5-14B-Instruct}\n")
    assert main(["plan", path, "--gpus", "1", "--gpu-memory-gb", "80", "--json"]) == 1
    plan = json.loads(capsys.readouterr().out)
    assert plan["fits"] is False
    locs = [p["loc"] for p in plan["problems"]]  # 14B: the learner and the engine both overflow
    assert locs == [["rollout", "gpu_memory_utilization"], ["model", "lora"]]


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--gpus", "3", "--nodes", "2"], "spread evenly"),
     (["--gpus", "-1"], "--gpus must be"),
     (["--gpus", "1", "--gpu-memory-gb", "0"], "--gpu-memory-gb must be")],
)  # fmt: skip
def test_bad_cluster_arguments_exit_2_with_a_message(spec_file, capsys, args, message):
    assert main(["plan", spec_file("name: x\n"), *args]) == 2
    assert message in capsys.readouterr().err


def test_a_bad_spec_exits_2_naming_the_field(spec_file, capsys):
    assert main(["plan", spec_file("placement: {mode: sideways}\n"), "--gpus", "1"]) == 2
    assert "placement.mode" in capsys.readouterr().err


def test_plan_command_starts_without_torch_or_ray():
    code = ("import sys; from rlvr.cli import main; main(['plan', 'examples/arithmetic.yaml', "
            "'--gpus', '0']); assert 'torch' not in sys.modules and 'ray' not in sys.modules, "
            "sorted(m for m in sys.modules if m in ('torch', 'ray'))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "layout cpu" in done.stdout
