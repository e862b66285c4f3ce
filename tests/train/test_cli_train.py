"""`rlvr train` input errors: exit 2 naming the field, never a traceback."""

from __future__ import annotations

import pytest

from rlvr.cli import main


def _write(tmp_path, text):
    p = tmp_path / "spec.yaml"
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("algorithm: {group_size: 1}\n", "algorithm.group_size"),
        ("algorithm: {estimator: ppo}\n", "algorithm.estimator"),
        ("rollout: {temperature: -1}\n", "rollout.temperature"),
        ("algoritm: {lr: 0.1}\n", "algoritm"),
        ("reward: {verifiers: [{name: nope}]}\n", "reward.verifiers[0].name"),
        ("data: {train: 'builtin:nosuch'}\n", "data.train"),
        ("model: {path: ./no/such/dir}\n", "model.path"),
        ("model: {lora: {rank: 0}}\n", "model.lora.rank"),
        ("[not, a, mapping]\n", "mapping"),
        ("a: [unclosed\n", "YAML"),
    ],
)
def test_bad_spec_exits_2_naming_the_field(tmp_path, capsys, text, expected):
    code = main(["train", _write(tmp_path, text), "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err
    assert "Traceback" not in err


def test_missing_spec_file_exits_2(tmp_path, capsys):
    assert main(["train", str(tmp_path / "nope.yaml")]) == 2
    assert "no spec file" in capsys.readouterr().err


def test_an_existing_run_needs_resume(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"step": 1}\n')
    code = main(["train", _write(tmp_path, "name: x\n"), "--run-dir", str(run_dir)])
    assert code == 2 and "--resume" in capsys.readouterr().err


def test_a_spec_whose_plan_does_not_fit_here_exits_2_naming_the_field(
    tmp_path, capsys, random_model_dir
):
    """Valid as a spec, unplaceable here (found when the run starts, on this machine's
    cluster): the same exit 2 naming the field and the fix, and no run started."""
    text = (
        f"model: {{path: {random_model_dir}}}\n"
        "data: {train: 'builtin:arithmetic?n=8', eval: null}\n"
        "reward: {workers: 1}\n"
        "rollout: {replicas: 2}\n"
        "placement: {mode: colocate}\n"
    )
    code = main(["train", _write(tmp_path, text), "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "placement.mode" in err and "rollout.replicas: 1" in err
    assert "Traceback" not in err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
