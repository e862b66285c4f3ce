"""Sharing a cluster: per-user tokens (RLVR_TOKENS_FILE: token -> {user, role}), owned jobs
(a user sees, cancels, resumes and streams only its own; others are 404 to it; an admin sees
all), per-user quotas (queued + running jobs, open event streams: 429 naming the quota),
`priority` at submission (above 0: admins only) and queue positions in GET /v1/jobs. The
single RLVR_API_TOKEN keeps working, as the admin."""

from __future__ import annotations

import time

import httpx
import pytest
import yaml

from rlvr.cli import main
from tests.security.conftest import ALICE, BOB, OPS, client, make_settings, serve, write_tokens

ADMIN_TOKEN = "single-admin-token-0123456789"


@pytest.fixture(scope="module")
def server(tmp_service):
    settings = make_settings(
        tmp_service,
        tokens_file=write_tokens(tmp_service),
        api_token=ADMIN_TOKEN,
        quota_jobs=2,
        quota_streams=1,
    )
    with serve(settings) as srv:
        yield srv


@pytest.fixture(scope="module")
def as_user(server):
    clients = {who: client(server, token) for who, token in
               [("alice", ALICE), ("bob", BOB), ("ops", OPS), ("admin", ADMIN_TOKEN)]}  # fmt: skip
    yield clients
    for c in clients.values():
        c.close()


def _submit(http: httpx.Client, spec: dict, name: str, **params) -> httpx.Response:
    return http.post("/v1/jobs", json={**spec, "name": name}, params=params)


def test_users_see_and_act_on_their_own_jobs_only(as_user, small_spec):
    alice, bob, ops, admin = (as_user[k] for k in ("alice", "bob", "ops", "admin"))
    job = _submit(alice, small_spec, "alice-1").json()["id"]
    assert alice.get(f"/v1/jobs/{job}").json()["owner"] == "alice"
    for method, path in [("GET", ""), ("GET", "/metrics"), ("GET", "/events"),
                         ("GET", "/samples"), ("POST", "/cancel"), ("POST", "/resume")]:  # fmt: skip
        r = bob.request(method, f"/v1/jobs/{job}{path}")
        assert r.status_code == 404, (method, path, r.text)
    assert job not in [j["id"] for j in bob.get("/v1/jobs").json()["jobs"]]
    assert bob.get("/v1/jobs", params={"owner": "alice"}).json()["total"] == 0  # not an admin
    for boss in (ops, admin):  # a tokens-file admin and the single RLVR_API_TOKEN
        assert job in [j["id"] for j in boss.get("/v1/jobs").json()["jobs"]]
        assert boss.get("/v1/jobs", params={"owner": "alice"}).json()["total"] >= 1
    assert ops.post(f"/v1/jobs/{job}/cancel").json()["status"] == "cancelled"


def test_a_wrong_token_is_401(server):
    with client(server, "not-a-token-of-anyone-000") as stranger:
        assert stranger.get("/v1/jobs").status_code == 401


def test_the_job_quota_is_per_user_and_named(as_user, small_spec, tmp_path, capsys):
    alice, bob = as_user["alice"], as_user["bob"]
    queued = [_submit(bob, small_spec, f"bob-{i}") for i in range(2)]
    assert [r.status_code for r in queued] == [201, 201]
    r = _submit(bob, small_spec, "bob-3")
    assert r.status_code == 429, r.text
    assert "quota_jobs" in r.json()["detail"]
    assert _submit(alice, small_spec, "alice-2").status_code == 201  # alice's own quota
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump({**small_spec, "name": "bob-cli"}))
    code = main(["submit", str(spec_file), "--server", str(bob.base_url), "--token", BOB])
    assert code == 2 and "quota_jobs" in capsys.readouterr().err  # a message, no traceback
    bob.post(f"/v1/jobs/{queued[0].json()['id']}/cancel")
    assert _submit(bob, small_spec, "bob-4").status_code == 201  # a finished job frees a place
    assert _submit(as_user["ops"], small_spec, "ops-1").status_code == 201  # admins: no quota


def test_the_stream_quota_is_named_and_freed_when_a_stream_closes(as_user, small_spec):
    alice = as_user["alice"]
    job = next(j["id"] for j in alice.get("/v1/jobs", params={"status": "queued"}).json()["jobs"])
    with alice.stream("GET", f"/v1/jobs/{job}/events") as first:
        assert first.status_code == 200
        r = alice.get(f"/v1/jobs/{job}/events")
        assert r.status_code == 429, r.text
        assert "quota_streams" in r.json()["detail"]
    deadline = time.monotonic() + 10
    while True:  # the server notices the closed stream at its next poll
        with alice.stream("GET", f"/v1/jobs/{job}/events") as again:
            if again.status_code == 200 or time.monotonic() > deadline:
                break
        time.sleep(0.3)
    assert again.status_code == 200


def test_priority_is_for_admins_and_orders_the_queue(as_user, small_spec):
    r = _submit(as_user["alice"], small_spec, "alice-urgent", priority=10)
    assert r.status_code == 403 and "priority" in r.json()["detail"]
    urgent = _submit(as_user["ops"], small_spec, "ops-urgent", priority=10).json()["id"]
    jobs = as_user["ops"].get("/v1/jobs", params={"status": "queued"}).json()["jobs"]
    places = {j["id"]: j["queue_position"] for j in jobs}
    assert places[urgent] == 1, places
    assert sorted(places.values()) == list(range(1, len(places) + 1))
    mine = as_user["alice"].get("/v1/jobs", params={"status": "queued"}).json()["jobs"]
    assert mine and all(j["owner"] == "alice" and j["queue_position"] > 1 for j in mine)
