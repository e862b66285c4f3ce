"""Smaller findings: the job-name check matched "evil\\n"; /metrics created a series per
arbitrary HTTP method; verifier worker processes inherited RLVR_API_TOKEN and the whole
server environment; 422 messages showed absolute server paths."""

from __future__ import annotations

import os

import pytest

from tests.security import env_probe  # noqa: F401 - registers the env_probe verifier
from tests.security.conftest import client, make_settings, serve

TOKEN = "small-findings-token-0123456789"
SECRETS = {
    "RLVR_API_TOKEN": TOKEN,
    "RLVR_DB_URL": "postgresql://u:pw@db/rlvr",
    "AWS_SECRET_ACCESS_KEY": "x",
}


@pytest.fixture(scope="module")
def server(tmp_service):
    saved = {k: os.environ.get(k) for k in SECRETS}
    os.environ.update(SECRETS)  # what a deployed service's environment holds
    try:
        with serve(make_settings(tmp_service, api_token=TOKEN)) as srv:
            yield srv
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def http(server):
    with client(server, TOKEN) as c:
        yield c


@pytest.mark.parametrize("name", ["evil\n", "evil\nrm -rf", "ok\r"])
def test_a_job_name_with_a_trailing_newline_is_refused(http, small_spec, name):
    r = http.post("/v1/jobs", json={**small_spec, "name": name})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "name"]


def test_metrics_label_unknown_methods_as_other(http):
    for method in ("BREW", "PROPFIND", "X-" + "A" * 50):
        http.request(method, "/v1/jobs")
    text = http.get("/metrics").text
    assert 'method="other"' in text
    assert "BREW" not in text and "PROPFIND" not in text and "X-AAAA" not in text


def test_verifier_workers_do_not_see_the_servers_secrets(http):
    r = http.post("/v1/verify", json={"verifier": "env_probe", "completion": "x", "reference": 1})
    assert r.status_code == 200, r.text
    details = r.json()["details"]
    assert details["pid"] != os.getpid()  # it ran in a pool worker, not in the server
    assert "PATH" in details["env"]
    assert not set(SECRETS) & set(details["env"]), details["env"]


def test_422_messages_name_the_root_not_its_server_path(http, tmp_service, small_spec):
    r = http.post("/v1/jobs", json={**small_spec, "model": {"path": "/etc"}})
    assert r.status_code == 422
    r2 = http.post("/v1/jobs", json={**small_spec, "data": {"train": "missing.jsonl"}})
    assert r2.status_code == 422
    text = r.text + r2.text
    assert str(tmp_service) not in text, text
    assert "models" in r.text and "data" in r2.text
