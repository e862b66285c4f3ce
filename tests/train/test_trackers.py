"""Experiment trackers as metric sinks (rlvr/train/trackers.py), fed what the training loop
feeds its sink: status, per-step metrics and samples, checkpoints, a resume's truncation.

Each tracker is read back with its own tools: TensorBoard's EventAccumulator, MLflow's
client against a real ``mlflow server`` on loopback, W&B's offline files.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from rlvr.config import JobSpec
from rlvr.net import free_port
from rlvr.train.sink import FanoutSink
from rlvr.train.trackers import REPORT_FILE, TrackerSink, mlflow_key, tracker_sinks

ROWS = [
    {
        "step": 0,
        "prompt": "What is 2 + 3?",
        "completion": "<think>2+3</think><answer>5</answer>",
        "think": "2+3",
        "answer": "5",
        "reference": "5",
        "reward": 1.0,
        "passed": True,
        "verdicts": {"math": {"score": 1.0, "passed": True, "reason": "equal", "details": {}}},
    },
    {
        "step": 0,
        "prompt": "What is 7 + 1? | a pipe\nand a newline",
        "completion": "<answer>9</answer>",
        "think": None,
        "answer": "9",
        "reference": "8",
        "reward": 0.0,
        "passed": False,
        "verdicts": {"math": {"score": 0.0, "passed": False, "reason": "differ", "details": {}}},
    },
]


def spec_with(**logging) -> JobSpec:
    return JobSpec.model_validate({"name": "tracked", "logging": logging})


def feed(sink, steps=range(1, 4), *, start: int = 0, resume_from: int | None = None) -> None:
    """What rlvr.train.loop.train() sends: (truncate on resume), running, the eval at step 0,
    each step's metrics and samples, a checkpoint, the final status."""
    if resume_from is not None:
        sink.truncate_after(resume_from)
    sink.status("running", step=start)
    if resume_from is None:
        sink.metrics(0, {"eval/accuracy": 0.125})
    for step in steps:
        sink.metrics(
            step,
            {"reward/mean": step / 10, "accuracy": step / 8, "eval/arith/pass@1": 0.5, "lr": 1e-5},
        )
        sink.samples(step, [{**r, "step": step} for r in ROWS])
    last = list(steps)[-1]
    sink.checkpoint(last, f"/runs/x/checkpoints/step_{last:06d}")
    sink.status("succeeded", step=last)


# -- the spec ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "uri, expect",
    [
        ("/etc/mlflow.db", "relative path inside the run directory"),
        ("file:///var/tmp/x", "scheme 'file' is not supported"),
        ("db/../../elsewhere.db", "'..' may not leave the run directory"),
        ("~/mlflow.db", "relative path inside the run directory"),
        ("sqlite:///tmp/mlflow.db", "scheme 'sqlite' is not supported"),
        ("http://user:pw@mlflow.example:5000", "no credentials in the URI"),
        ("https://", "names no host"),
    ],
)
def test_a_tracking_uri_cannot_write_outside_the_run_dir(uri, expect):
    with pytest.raises(ValidationError) as err:
        spec_with(mlflow={"tracking_uri": uri})
    e = err.value.errors()[0]
    assert e["loc"] == ("logging", "mlflow", "tracking_uri")
    assert "logging.mlflow.tracking_uri" in e["msg"] and expect in e["msg"]


def test_tracker_settings_are_checked_and_default_off():
    assert tracker_sinks(JobSpec(), "/nonexistent") == []  # nothing opened, nothing written
    ok = spec_with(mlflow={"tracking_uri": "mlflow/runs.db"}, wandb={"project": "rl-1"})
    assert ok.logging.mlflow.experiment == "rlvr" and ok.logging.wandb.mode == "offline"
    for bad, loc in [
        ({"wandb": {"project": "p", "mode": "online"}}, ("logging", "wandb", "mode")),
        ({"wandb": {"project": "../p"}}, ("logging", "wandb", "project")),
        ({"mlflow": {"tracking_uri": "m.db", "experiment": "x\ny"}}, ("logging", "mlflow", "experiment")),
        ({"tensorboard": True, "comet": {}}, ("logging", "comet")),
    ]:  # fmt: skip
        with pytest.raises(ValidationError) as err:
            spec_with(**bad)
        assert err.value.errors()[0]["loc"] == loc


def test_mlflow_key_keeps_names_mlflow_accepts():
    assert mlflow_key("eval/arith/pass@1") == "eval/arith/pass_1"
    assert mlflow_key("reward/math/mean") == "reward/math/mean"


# -- failures never reach the run -------------------------------------------------------------
class _Flaky:
    """A tracker whose metrics calls at steps 2 and 4 raise (a server that comes and goes)."""

    def __init__(self):
        self.calls: list[int] = []

    def metrics(self, step, values):
        self.calls.append(step)
        if step in (2, 4):
            raise ConnectionError(f"server gone at step {step}")

    def samples(self, step, rows):
        pass

    def checkpoint(self, step, path):
        pass

    def status(self, status, *, step=None, error=None):
        pass

    def truncate_after(self, step):
        pass


def test_a_failing_tracker_is_warned_once_counted_and_the_rest_still_written(tmp_path, caplog):
    flaky = _Flaky()
    guarded = TrackerSink("flaky", lambda: flaky, tmp_path)
    with caplog.at_level("WARNING", logger="rlvr.train.trackers"):
        feed(guarded, steps=range(1, 6))  # no exception reaches the caller
    assert flaky.calls == [0, 1, 2, 3, 4, 5]  # it kept being called after failing
    assert guarded.errors == 2 and guarded.dropped == 0
    warnings = [r for r in caplog.records if "tracker flaky failed" in r.getMessage()]
    assert len(warnings) == 1 and "server gone at step 2" in warnings[0].getMessage()
    report = json.loads((tmp_path / REPORT_FILE).read_text())
    assert report["flaky"]["errors"] == 2
    assert report["flaky"]["first_error"].startswith("metrics: ConnectionError")


def test_a_tracker_that_cannot_open_is_switched_off(tmp_path):
    opened = []

    def broken():
        opened.append(1)
        raise ModuleNotFoundError("No module named 'nonexistent_tracker'")

    guarded = TrackerSink("missing", broken, tmp_path)
    feed(guarded)  # 1 + 1 + 3 * 2 + 1 + 1 = 10 records
    assert len(opened) == 3  # tried three times, then off
    assert guarded.errors == 3 and guarded.dropped == 10
    assert json.loads((tmp_path / REPORT_FILE).read_text())["missing"]["dropped"] == 10


def test_an_unreachable_mlflow_server_costs_a_warning_not_the_run(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    port = free_port()  # nothing listens there
    spec = spec_with(mlflow={"tracking_uri": f"http://127.0.0.1:{port}"})
    (sink,) = tracker_sinks(spec, tmp_path)
    feed(FanoutSink(sink))
    assert sink.errors == 3 and "open" in sink.first_error
    assert not (tmp_path / "mlflow_run.json").exists()


# -- TensorBoard -----------------------------------------------------------------------------
def _events(log_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def _texts(acc, tag: str) -> dict[int, str]:
    return {e.step: e.tensor_proto.string_val[0].decode() for e in acc.Tensors(tag)}


def test_tensorboard_events_read_back_and_a_resume_purges_replayed_steps(tmp_path):
    pytest.importorskip("tensorboard")
    spec = spec_with(tensorboard=True)
    (sink,) = tracker_sinks(spec, tmp_path)
    feed(sink, steps=range(1, 5))
    assert sink.errors == 0, sink.first_error

    acc = _events(tmp_path / "tensorboard")
    reward = [(e.step, round(e.value, 6)) for e in acc.Scalars("reward/mean")]
    assert reward == [(1, 0.1), (2, 0.2), (3, 0.3), (4, 0.4)]
    assert [e.step for e in acc.Scalars("eval/accuracy")] == [0]
    assert "eval/arith/pass@1" in acc.Tags()["scalars"]
    assert "name: tracked" in _texts(acc, "spec/text_summary")[0]
    table = _texts(acc, "samples/text_summary")[3]
    assert table.splitlines()[0].startswith("| step | prompt | completion |")
    assert "What is 7 + 1? \\| a pipe<br>and a newline" in table  # cells cannot break the table
    assert "step_000004" in _texts(acc, "checkpoints/text_summary")[4]
    assert _texts(acc, "status/text_summary")[4] == "succeeded"

    # Killed after step 4, resumed from the checkpoint of step 2: steps 3.. are replayed.
    (again,) = tracker_sinks(spec, tmp_path)
    again.truncate_after(2)
    again.status("running", step=2)
    again.metrics(3, {"reward/mean": 0.9})
    again.status("succeeded", step=3)
    acc = _events(tmp_path / "tensorboard")
    reward = [(e.step, round(e.value, 6)) for e in acc.Scalars("reward/mean")]
    assert reward == [(1, 0.1), (2, 0.2), (3, 0.9)]


# -- MLflow ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real ``mlflow server`` on loopback (SQLite backend, artifacts served by it)."""
    pytest.importorskip("mlflow")
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = (root / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=root,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # a readiness wait, not an assertion on speed
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start:\n{(root / 'server.log').read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its uvicorn worker
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.mark.slow  # the server takes ~25 s to start on 2 cores
def test_mlflow_run_reads_back_through_the_client(mlflow_server, tmp_path):
    from mlflow.tracking import MlflowClient

    spec = spec_with(mlflow={"tracking_uri": mlflow_server, "experiment": "trackers-test"})
    (sink,) = tracker_sinks(spec, tmp_path)
    feed(sink)
    assert sink.errors == 0, sink.first_error

    run_id = json.loads((tmp_path / "mlflow_run.json").read_text())["run_id"]
    client = MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "tracked"
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.name == "trackers-test"
    assert run.data.params["algorithm.group_size"] == "8"
    assert run.data.params["logging.mlflow.tracking_uri"] == mlflow_server
    assert run.data.tags["rlvr.checkpoint"].endswith("step_000003")
    history = client.get_metric_history(run_id, "reward/mean")
    assert sorted((m.step, round(m.value, 6)) for m in history) == [(1, 0.1), (2, 0.2), (3, 0.3)]
    assert [m.step for m in client.get_metric_history(run_id, "eval/arith/pass_1")] == [1, 2, 3]

    local = client.download_artifacts(run_id, "samples/step_000002.json", str(tmp_path / "dl"))
    table = json.loads(Path(local).read_text())
    rows = [dict(zip(table["columns"], r, strict=True)) for r in table["data"]]
    assert [(r["step"], r["answer"], r["passed"]) for r in rows] == [
        (2, "5", True),
        (2, "9", False),
    ]
    assert json.loads(rows[1]["verdicts"])["math"]["reason"] == "differ"

    # A resumed job continues the same MLflow run; a failure marks it FAILED with the error.
    (again,) = tracker_sinks(spec, tmp_path)
    again.truncate_after(3)
    again.status("running", step=3)
    again.metrics(4, {"reward/mean": 0.4})
    again.status("failed", step=4, error="RuntimeError: out of memory")
    run = client.get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags["rlvr.error"].endswith("out of memory")
    assert [m.step for m in client.get_metric_history(run_id, "reward/mean")][-1] == 4


def test_a_local_mlflow_store_stays_in_the_run_dir(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    spec = spec_with(mlflow={"tracking_uri": "mlflow.db"})
    (sink,) = tracker_sinks(spec, tmp_path)
    feed(sink, steps=[1])
    assert sink.errors == 0, sink.first_error
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = json.loads((tmp_path / "mlflow_run.json").read_text())["run_id"]
    assert [m.value for m in client.get_metric_history(run_id, "reward/mean")] == [0.1]
    assert list((tmp_path / "mlartifacts").rglob("step_000001.json"))  # the samples table

    # A symlink planted in the run dir cannot carry the store out of it.
    outside = tmp_path / "outside"
    outside.mkdir()
    run_dir = tmp_path / "run2"
    run_dir.mkdir()
    (run_dir / "mlflow.db").symlink_to(outside / "mlflow.db")
    (sink,) = tracker_sinks(spec, run_dir)
    feed(sink, steps=[1])
    assert "leaves the run directory" in sink.first_error and not any(outside.iterdir())


# -- W&B -------------------------------------------------------------------------------------
def test_wandb_offline_writes_its_run_files_in_the_run_dir(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")  # belt and braces: never the network
    spec = spec_with(wandb={"project": "rlvr-test"})
    (sink,) = tracker_sinks(spec, tmp_path)
    try:
        feed(sink)
    finally:
        wandb.teardown()  # its service process ends with the test, not with pytest
    assert sink.errors == 0, sink.first_error

    run_id = (tmp_path / "wandb_run_id").read_text().strip()
    (run_dir,) = (tmp_path / "wandb").glob(f"offline-run-*-{run_id}")
    data = (run_dir / f"run-{run_id}.wandb").read_bytes()
    assert b"reward/mean" in data and b"rlvr-test" in data and b"tracked" in data
    tables = sorted((run_dir / "files" / "media" / "table").glob("samples_*.table.json"))
    assert len(tables) == 3
    table = json.loads(tables[0].read_text())
    assert table["columns"][:3] == ["step", "prompt", "completion"]
    assert [row[3] for row in table["data"]] == ["5", "9"]  # the answers
