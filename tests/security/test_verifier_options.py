"""Finding: bad verifier options were 500s (math timeout_s -1, code memory_mb 0, backend
bogus, sandbox "x", reference.timeout_s 1e308, deeply nested JSON/YAML), and a job spec with
backend: docker or memory_mb: 1e6 was accepted. Every verifier's options are a typed model
now: a bad one is 422 naming the option, at /v1/verify and at job submission."""

from __future__ import annotations

import json

import pytest

from tests.security.conftest import client, make_settings, serve

CODE_REF = {"tests": [{"stdin": "", "stdout": "1\n"}]}
BAD_OPTIONS = [
    ("math", {"timeout_s": -1}, "timeout_s"),
    ("math", {"extract": "latex"}, "extract"),
    ("code", {"memory_mb": 0}, "memory_mb"),
    ("code", {"memory_mb": 1e6}, "memory_mb"),
    ("code", {"backend": "bogus"}, "backend"),
    ("code", {"backend": "docker"}, "backend"),  # no Docker engine answers here
    ("code", {"sandbox": "x"}, "sandbox"),
    ("countdown", {"format_score": 2}, "format_score"),
    ("think_format", {"answer": "maybe"}, "answer"),
]
IDS = [f"{name}-{option}" for name, _, option in BAD_OPTIONS]


@pytest.fixture(scope="module")
def server(tmp_service):
    with serve(make_settings(tmp_service)) as srv:
        yield srv


@pytest.fixture(scope="module")
def http(server):
    with client(server) as c:
        yield c


def _reference(name: str):
    return {"code": CODE_REF, "countdown": {"numbers": [1, 2], "target": 3}}.get(name, "4")


@pytest.mark.parametrize(("name", "options", "option"), BAD_OPTIONS, ids=IDS)
def test_bad_option_at_verify_is_422_naming_it(http, name, options, option):
    body = {"verifier": name, "completion": "x", "reference": _reference(name), "options": options}
    r = http.post("/v1/verify", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "options", option]


@pytest.mark.parametrize(("name", "options", "option"), BAD_OPTIONS, ids=IDS)
def test_bad_option_in_a_job_spec_is_422_naming_it(http, small_spec, name, options, option):
    small_spec["reward"] = {"verifiers": [{"name": "math"}, {"name": name, "options": options}]}
    r = http.post("/v1/jobs", json=small_spec)
    assert r.status_code == 422, r.text
    locs = [e["loc"] for e in r.json()["detail"]]
    assert ["body", "reward", "verifiers", 1, "options", option] in locs, locs


def test_reference_timeout_too_large_to_be_a_float_is_422(http):
    body = '{"verifier": "code", "completion": "x", "reference": {"tests": [{"stdout": "1"}], "timeout_s": 1e999}}'
    r = http.post("/v1/verify", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "reference", "timeout_s"]


@pytest.mark.parametrize("depth", [100, 100_000])
def test_deeply_nested_json_is_a_client_error(http, depth):
    reference = "[" * depth + "]" * depth
    body = f'{{"verifier": "math", "completion": "x", "reference": {reference}}}'
    r = http.post("/v1/verify", content=body, headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500, r.text


@pytest.mark.parametrize("depth", [100, 100_000])
def test_deeply_nested_spec_is_422(http, small_spec, depth):
    nested = "[" * depth + "]" * depth
    yaml_text = f"name: deep\nrollout:\n  stop: {nested}\n"
    r = http.post("/v1/jobs", content=yaml_text, headers={"Content-Type": "application/yaml"})
    assert r.status_code == 422, r.text
    assert "nested" in json.dumps(r.json())
    json_text = json.dumps(small_spec)[:-1] + f', "extra": {nested}}}'
    r = http.post("/v1/jobs", content=json_text, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text


def test_a_caller_may_only_name_the_images_the_service_allows(monkeypatch):
    """Attack: the code verifier's ``image`` option naming another image on the engine (a
    build stage, the database's) to run code in. Only the default image and those listed in
    RLVR_SANDBOX_IMAGES may be named: 422 on ``image`` before any engine is asked."""
    from rlvr.api.validation import verifier_option_problems

    monkeypatch.setenv("RLVR_SANDBOX_IMAGE", "rlvr-sandbox:1")
    monkeypatch.setenv("RLVR_SANDBOX_IMAGES", "rlvr-sandbox:2, ,rlvr-sandbox:1")
    for backend in ("auto", "local", "docker"):
        [(loc, msg)] = verifier_option_problems(
            "code", {"backend": backend, "image": "postgres:15"}
        )
        assert loc == ("image",) and "'postgres:15' is not allowed" in msg
        assert "rlvr-sandbox:1, rlvr-sandbox:2 (the service's RLVR_SANDBOX_IMAGES)" in msg
    # An allowed image passes this check (the engine check that follows is the docker tests').
    assert verifier_option_problems("code", {"backend": "local", "image": "rlvr-sandbox:2"}) == []
    assert verifier_option_problems("code", {"image": "rlvr-sandbox:1"}) == []
