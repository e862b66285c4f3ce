"""`rlvr submit | jobs | status | cancel | resume` against a live server over HTTP."""

from __future__ import annotations

from rlvr.cli import main


def run(capsys, server, *args: str) -> tuple[int, str, str]:
    code = main([*args, "--server", server.url])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_submit_list_status_cancel_round_trip(capsys, server, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: cli-job\nalgorithm: {max_steps: 3}\n")
    code, out, _ = run(capsys, server, "submit", str(spec))
    assert code == 0
    job_id = out.strip()
    assert job_id.startswith("cli-job-")

    code, out, _ = run(capsys, server, "jobs")
    assert code == 0 and job_id in out and "queued" in out and "0/3" in out

    code, out, _ = run(capsys, server, "status", job_id)
    assert code == 0 and out.startswith(f"{job_id}  queued  step 0/3")

    code, out, _ = run(capsys, server, "cancel", job_id)
    assert code == 0 and out.strip() == f"{job_id} cancelled"

    code, _, err = run(capsys, server, "resume", job_id)
    assert code == 2 and "no checkpoint" in err


def test_a_rejected_spec_prints_each_field_and_exits_2(capsys, server, tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("model: {path: /etc}\nreward: {verifiers: [{name: chess}]}\n")
    code, _, err = run(capsys, server, "submit", str(spec))
    assert code == 2
    assert "model.path: '/etc' is outside the model roots" in err
    assert "reward.verifiers.0.name: unknown verifier 'chess'" in err


def test_unknown_job_and_unreachable_server_are_usage_errors(capsys, server):
    code, _, err = run(capsys, server, "status", "nope-1")
    assert code == 2 and "no job 'nope-1'" in err
    code = main(["jobs", "--server", "http://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot reach the rlvr service" in err
