"""The dashboard in headless Chromium. Against a real service, Ray cluster and trainer:
submit through the form, see the job listed, watch the reward chart grow, read a sample.
Against a token-protected service: the dashboard asks for the token and uses it."""

from __future__ import annotations

import os
import sys
import time

import pytest
import yaml

from rlvr.api.app import create_app
from rlvr.api.server import BackgroundServer
from rlvr.api.settings import Settings
from rlvr.jobs.runner import JobRunner
from rlvr.jobs.store import JobStore

# Set RLVR_DASHBOARD_SCREENSHOT=docs/dashboard.png to refresh the committed screenshot.
SCREENSHOT = os.environ.get("RLVR_DASHBOARD_SCREENSHOT")

REWARD_POINTS = """() => {
  const gd = document.getElementById('chart-reward');
  const trace = (gd.data || []).find((t) => t.name === 'reward/mean');
  return trace ? trace.x.length : 0;
}"""


@pytest.fixture
def server(tmp_path, ray_head, model_root):
    settings = Settings(
        db_url=f"sqlite:///{tmp_path / 'rlvr.db'}", runs_dir=tmp_path / "runs",
        data_roots=[tmp_path], model_roots=[model_root], ray_address=ray_head.address,
    )  # fmt: skip
    store = JobStore(settings.db_url)
    runner = JobRunner(
        store, db_url=settings.db_url, ray_address=ray_head.address, ray_token=ray_head.token,
        driver_python=sys.executable, poll_s=0.5,
    )  # fmt: skip
    with BackgroundServer(create_app(settings, runner=runner)) as srv:
        yield srv


@pytest.mark.slow
def test_dashboard_lists_the_job_draws_a_growing_reward_curve_and_shows_samples(
    server, page, tiny_spec
):
    page.goto(server.url + "/")
    page.wait_for_selector("#example-select option", state="attached")  # examples from the API
    spec = tiny_spec(name="browser", max_steps=40, every=10, max_new_tokens=32)
    page.fill("#spec-text", yaml.safe_dump(spec, sort_keys=False))
    page.click("#submit-button")
    page.wait_for_url("**/#/jobs/*", timeout=30_000)
    job_id = page.url.split("#/jobs/")[1]

    page.goto(server.url + "/#/")
    row = page.wait_for_selector(f'tr[data-job="{job_id}"]', timeout=30_000)
    assert "browser" in row.inner_text()

    page.click(f'tr[data-job="{job_id}"] a')
    page.wait_for_function(f"({REWARD_POINTS})() >= 1", timeout=180_000)
    first = page.evaluate(REWARD_POINTS)
    page.wait_for_function(f"({REWARD_POINTS})() > {first}", timeout=120_000)
    assert page.evaluate(REWARD_POINTS) > first  # points arrive live, through SSE

    sample = page.wait_for_selector("#samples .sample", timeout=60_000)
    assert sample.query_selector(".think") is not None and sample.query_selector(".answer")
    verdicts = sample.inner_text()
    assert "math" in verdicts and "think_format" in verdicts

    page.wait_for_selector("#job-status.succeeded", timeout=180_000)
    time.sleep(1.0)  # the last redraw
    assert page.evaluate(REWARD_POINTS) == 40
    if SCREENSHOT:
        page.screenshot(path=SCREENSHOT, full_page=True)


@pytest.fixture
def secured_server(tmp_path):
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'rlvr.db'}", api_token="s3cret",
                        runs_dir=tmp_path / "runs")  # fmt: skip
    with BackgroundServer(create_app(settings, start_runner=False)) as srv:
        yield srv


def test_dashboard_asks_for_the_token_and_then_uses_it(secured_server, page):
    asked = []

    def answer(dialog):
        asked.append(dialog.message)
        dialog.accept("s3cret")

    page.on("dialog", answer)
    page.goto(secured_server.url + "/")
    page.wait_for_selector("#jobs-empty:not([hidden])", timeout=30_000)  # the list loaded
    assert asked and "RLVR_API_TOKEN" in asked[0]
    assert page.evaluate("localStorage.getItem('rlvr-token')") == "s3cret"
    page.wait_for_selector("#example-select option", state="attached", timeout=30_000)
