"""The samples view shows a tool-using completion's turns apart (model text, tool code,
tool output), in headless Chromium against a real server whose store holds the rows."""

from __future__ import annotations

import pytest

from rlvr.api.app import create_app
from rlvr.api.server import BackgroundServer
from rlvr.api.settings import Settings
from rlvr.config import JobSpec
from rlvr.jobs.store import JobStore
from rlvr.tools.protocol import Protocol

COMPLETION = (
    'I will compute. <tool name="python">print(6 * 7)</tool><output>42\n</output>'
    "<think>x</think><answer>42</answer>"
)


@pytest.fixture
def server(tmp_path):
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'rlvr.db'}", runs_dir=tmp_path / "runs")
    store = JobStore(settings.db_url)
    spec = JobSpec.model_validate({"name": "tools", "tools": {"enabled": ["python"]}})
    job = store.create_job(spec, run_dir=str(tmp_path / "runs" / "tools"))
    store.set_status(job.id, "running")
    store.record_metrics(job.id, 1, {"reward/mean": 1.0, "tools/calls_mean": 1.0})
    row = {
        "prompt": "What is 6 * 7?", "id": "p0", "completion": COMPLETION, "think": "x",
        "answer": "42", "reference": "42", "reward": 1.0, "passed": True,
        "verdicts": {"math": {"score": 1.0, "passed": True, "reason": "ok"}},
        "turns": Protocol().split_turns(COMPLETION),
    }  # fmt: skip
    store.record_samples(job.id, 1, [row])
    store.set_status(job.id, "succeeded")
    with BackgroundServer(create_app(settings, start_runner=False)) as srv:
        yield srv, job.id


def test_turns_are_shown_apart(server, page):
    srv, job_id = server
    page.goto(srv.url + f"/#/jobs/{job_id}")
    sample = page.wait_for_selector("#samples .sample", timeout=30_000)
    turns = sample.query_selector_all(".turn")
    kinds = [t.get_attribute("class").split()[-1] for t in turns]
    assert kinds[:3] == ["turn-model", "turn-tool_call", "turn-tool_output"]
    assert "tool code (python)" in turns[1].inner_text().lower()
    assert "print(6 * 7)" in turns[1].inner_text()
    assert "42" in turns[2].inner_text()
