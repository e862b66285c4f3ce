"""``GET /v1/tools`` over real HTTP: every tool a job may enable, behind the API token."""

from __future__ import annotations

import httpx

from rlvr.api.app import create_app
from rlvr.api.server import BackgroundServer


def test_lists_the_builtin_tools(http):
    r = http.get("/v1/tools")
    assert r.status_code == 200
    tools = {t["name"]: t["description"] for t in r.json()}
    assert {"python", "calculator"} <= set(tools)
    assert "sandbox" in tools["python"]


def test_a_spec_may_enable_a_listed_tool_and_not_an_unknown_one(http):
    ok = http.post("/v1/jobs", json={"name": "tools-ok", "tools": {"enabled": ["calculator"]}})
    assert ok.status_code in (200, 201, 202), ok.text
    bad = http.post("/v1/jobs", json={"name": "tools-bad", "tools": {"enabled": ["shell"]}})
    assert bad.status_code == 422
    errors = bad.json()["detail"]
    (error,) = [e for e in errors if e["loc"][1:3] == ["tools", "enabled"]]
    assert "unknown tool 'shell'; known tools: calculator, python" in error["msg"]


def test_the_token_is_required(settings, tmp_path):
    secured = settings.model_copy(
        update={"api_token": "s3cret", "db_url": f"sqlite:///{tmp_path}/a.db"}
    )
    with BackgroundServer(create_app(secured, start_runner=False)) as srv:
        assert httpx.get(srv.url + "/v1/tools").status_code == 401
        ok = httpx.get(srv.url + "/v1/tools", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()
