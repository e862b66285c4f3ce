"""GET /v1/jobs/{id}/checkpoints/{step}/download: the export as a tar, to the job's owner and
admins only; only files of that checkpoint (no trainer state, no links out of it), and only
from runs under the service's runs dir. Attacker-style: another user's job, a step that does
not exist, traversal spellings, a job whose recorded run dir points elsewhere."""

from __future__ import annotations

import io
import json
import os
import tarfile

import pytest

from rlvr.config import JobSpec
from rlvr.jobs.store import JobStore
from tests.security.conftest import ALICE, BOB, OPS, client, make_settings, serve, write_tokens


@pytest.fixture(scope="module")
def settings(tmp_service):
    return make_settings(tmp_service, tokens_file=write_tokens(tmp_service))


@pytest.fixture(scope="module")
def server(settings):
    with serve(settings) as srv:
        yield srv


def _fake_checkpoint(run_dir, step, secret):
    """What the trainer writes at a step (small stand-ins), plus a planted link to a secret."""
    ckpt = run_dir / "checkpoints" / f"step_{step}"
    ckpt.mkdir(parents=True)
    (ckpt / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    (ckpt / "model.safetensors").write_bytes(os.urandom(3000))  # not a multiple of 512
    (ckpt / "tokenizer.json").write_text("{}")
    for name in ("optimizer.pt", "rng.pt"):
        (ckpt / name).write_bytes(b"trainer state")
    (ckpt / "trainer_state.json").write_text(json.dumps({"step": step}))
    (ckpt / "leak.json").symlink_to(secret)
    return ckpt


def _members(resp):
    with tarfile.open(fileobj=io.BytesIO(resp.content)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def test_owner_downloads_the_export_and_nobody_else_does(server, settings, small_spec, tmp_path):
    secret = tmp_path / "secret.json"
    secret.write_text('{"password": "hunter2"}')
    with client(server, ALICE) as alice, client(server, BOB) as bob, client(server, OPS) as ops:
        job = alice.post("/v1/jobs", json={**small_spec, "name": "dl"}).json()["id"]
        ckpt = _fake_checkpoint(settings.runs_dir / job, 2, secret)
        url = f"/v1/jobs/{job}/checkpoints/2/download"

        r = alice.get(url)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/x-tar"
        assert f'filename="{job}-step_2.tar"' in r.headers["content-disposition"]
        files = _members(r)
        assert set(files) == {f"{job}-step_2/{n}" for n in
                              ("config.json", "model.safetensors", "tokenizer.json", "README.md")}  # fmt: skip
        assert files[f"{job}-step_2/model.safetensors"] == (ckpt / "model.safetensors").read_bytes()
        assert b"hunter2" not in r.content and b"trainer state" not in r.content
        assert b"tiny:arithmetic" in files[f"{job}-step_2/README.md"]  # the card: base model
        assert ops.get(url).status_code == 200  # an admin may

        assert bob.get(url).status_code == 404  # not confirmed to exist
        with client(server) as anonymous:
            assert anonymous.get(url).status_code == 401
        assert alice.get(f"/v1/jobs/{job}/checkpoints/3/download").status_code == 404
        r = alice.get(url, params={"adapter": "true"})
        assert r.status_code == 404 and "not a LoRA run" in r.json()["detail"]
        for step in ("-1", "step_2", "..%2F..%2F..%2Fetc", "2%2F..%2F..", "2abc", "1e3"):
            r = alice.get(f"/v1/jobs/{job}/checkpoints/{step}/download")
            assert r.status_code in (404, 422), (step, r.status_code)
            assert b"hunter2" not in r.content


def test_a_run_dir_outside_the_runs_dir_is_never_read(server, settings, tmp_path):
    """A job row whose run dir points elsewhere (an old service's, a tampered database)."""
    elsewhere = tmp_path / "elsewhere"
    _fake_checkpoint(elsewhere, 1, tmp_path / "none")
    store = JobStore(settings.db_url)
    job = store.create_job(JobSpec(name="moved"), run_dir=str(elsewhere), owner="alice")
    with client(server, ALICE) as alice:
        r = alice.get(f"/v1/jobs/{job.id}/checkpoints/1/download")
    assert r.status_code == 404 and str(elsewhere) not in r.text
