"""Finding: YAML alias amplification. A 520-byte spec became a 69 MB stored spec (every
later GET /v1/jobs took ~4 s), and each event stream re-parsed it every 0.5 s. Now aliases
and anchors are refused, the stored spec is capped, and streams read event rows only."""

from __future__ import annotations

import json

import httpx
import pytest

from rlvr.api.validation import MAX_STORED_SPEC_BYTES
from tests.security.conftest import client, make_settings, serve

LAUGHS = """\
name: laughs
rollout:
  stop: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
x1: &a1 [*a0, *a0, *a0, *a0, *a0, *a0, *a0, *a0, *a0]
x2: &a2 [*a1, *a1, *a1, *a1, *a1, *a1, *a1, *a1, *a1]
x3: &a3 [*a2, *a2, *a2, *a2, *a2, *a2, *a2, *a2, *a2]
x4: &a4 [*a3, *a3, *a3, *a3, *a3, *a3, *a3, *a3, *a3]
"""


@pytest.fixture(scope="module")
def server(tmp_service):
    with serve(make_settings(tmp_service)) as srv:
        yield srv


@pytest.fixture(scope="module")
def http(server):
    with client(server) as c:
        yield c


def _post_yaml(http, text: str) -> httpx.Response:
    return http.post("/v1/jobs", content=text, headers={"Content-Type": "application/yaml"})


def test_yaml_aliases_are_refused_before_they_expand(http):
    r = _post_yaml(http, LAUGHS)
    assert r.status_code == 422, r.text
    assert "aliases" in r.json()["detail"][0]["msg"]


def test_even_a_single_anchor_is_refused(http, small_spec):
    text = "name: anchored\nalgorithm: &algo {group_size: 2, prompts_per_step: 2, max_steps: 4}\n"
    r = _post_yaml(http, text)
    assert r.status_code == 422, r.text
    assert "anchors" in r.json()["detail"][0]["msg"]


def test_a_spec_larger_than_the_stored_cap_is_refused(http, small_spec):
    small_spec["rollout"]["stop"] = ["y" * 1000] * (MAX_STORED_SPEC_BYTES // 1000 + 10)
    r = http.post("/v1/jobs", json=small_spec)
    assert r.status_code == 422, r.text
    assert "bytes" in json.dumps(r.json())


def test_an_event_stream_does_not_reread_the_job_while_it_waits(server, http, small_spec):
    job_id = http.post("/v1/jobs", json=small_spec).json()["id"]
    store = server._server.config.app.state.store
    reads = []
    real_get_job = store.get_job
    store.get_job = lambda *a, **kw: reads.append(a) or real_get_job(*a, **kw)
    try:
        timeout = httpx.Timeout(10, read=2.0)  # ~4 polls of an idle queued job
        with http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=timeout) as r:
            assert r.status_code == 200
            lines = []
            with pytest.raises(httpx.ReadTimeout):
                for line in r.iter_lines():
                    lines.append(line)
    finally:
        store.get_job = real_get_job
    assert "event: status" in lines
    assert len(reads) <= 1, f"the job row was read {len(reads)} times (the spec parsed each time)"
