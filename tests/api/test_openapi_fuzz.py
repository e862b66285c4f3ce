"""schemathesis against /openapi.json of a real server: generated inputs never cause a 5xx.

Each operation gets a bounded number of generated requests (hypothesis, derandomized so a
failure reproduces). schemathesis' pytest plugin does not run under this pytest, so the
operations are walked by hand with their hypothesis strategies.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

EXAMPLES_PER_OPERATION = 20


def _operations(url: str):
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    for result in schema.get_all_operations():
        op = result.ok()
        if op.path.endswith("/events"):
            continue  # a stream that lasts as long as its (here never-running) job
        yield op


def test_generated_requests_never_get_a_server_error(server):
    checked = []
    for op in _operations(server.url):

        @given(case=op.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def fuzz(case):
            case.call_and_validate(base_url=server.url, checks=[not_a_server_error], timeout=30)

        try:
            fuzz()
        except Exception as exc:
            pytest.fail(f"{op.method.upper()} {op.path}: {exc}")
        checked.append(f"{op.method.upper()} {op.path}")
    assert "POST /v1/jobs" in checked and "POST /v1/verify" in checked, checked


def test_openapi_documents_every_designed_endpoint(http):
    paths = http.get("/openapi.json").json()["paths"]
    designed = {
        ("post", "/v1/jobs"), ("get", "/v1/jobs"), ("get", "/v1/jobs/{job_id}"),
        ("post", "/v1/jobs/{job_id}/cancel"), ("post", "/v1/jobs/{job_id}/resume"),
        ("get", "/v1/jobs/{job_id}/metrics"), ("get", "/v1/jobs/{job_id}/events"),
        ("get", "/v1/jobs/{job_id}/samples"), ("get", "/v1/jobs/{job_id}/checkpoints"),
        ("get", "/v1/jobs/{job_id}/logs"), ("get", "/v1/verifiers"), ("post", "/v1/verify"),
        ("get", "/healthz"), ("get", "/metrics"),
    }  # fmt: skip
    documented = {(m, p) for p, ops in paths.items() for m in ops}
    assert designed <= documented, designed - documented
    body = paths["/v1/jobs"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "application/yaml"}
