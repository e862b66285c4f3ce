"""Experiment trackers as metric sinks: TensorBoard, MLflow and W&B (offline), from ``logging``.

    out = FanoutSink(RunDirSink(run_dir), *tracker_sinks(spec, run_dir), sink)

Each tracker gets what the run directory gets: every step's metrics, the samples (as a
table where the tracker has one), checkpoints and status; the job spec is logged once, as
parameters. A tracker is a convenience beside the run directory and the job store, never a
reason to lose a run, so each one runs behind a :class:`TrackerSink`:

- its calls happen on a thread of its own, so a slow or unreachable server never holds up
  a training step (at most ``max_pending`` records wait; more are dropped and counted);
- any exception is caught: the first one per tracker is logged as a warning, every one is
  counted, and the counts are written to ``<run dir>/trackers.json``;
- a tracker that cannot even be opened three times is switched off for the run.

Files a tracker writes stay inside the run directory: ``tensorboard/``, ``wandb/``, and a
local MLflow store (an SQLite file at a relative path, ``mlartifacts/``); ``JobSpec``
refuses any other place.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import math
import os
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rlvr.config import JobSpec, MlflowSpec, WandbSpec
from rlvr.train.sink import MetricSink, SampleRow

log = logging.getLogger("rlvr.train.trackers")

REPORT_FILE = "trackers.json"  # {tracker: {errors, dropped, first_error}} in the run dir
TERMINAL = ("succeeded", "failed", "cancelled")
SAMPLE_COLUMNS = ("step", "prompt", "completion", "answer", "reference", "reward", "passed")
MAX_OPEN_ATTEMPTS = 3


def tracker_sinks(spec: JobSpec, run_dir: str | Path) -> list[MetricSink]:
    """One :class:`TrackerSink` per tracker ``spec.logging`` turns on (none: ``[]``).

    Nothing is imported or opened here: a tracker's package is loaded, and its run created,
    on the tracker's own thread at the first record, so a missing package or a server that
    is down costs a warning, not the run."""
    run_dir = Path(run_dir)
    cfg = spec.logging
    sinks: list[MetricSink] = []
    if cfg.tensorboard:
        sinks.append(TrackerSink("tensorboard", lambda: TensorBoardTracker(spec, run_dir), run_dir))
    if cfg.mlflow is not None:
        ml = cfg.mlflow
        sinks.append(TrackerSink("mlflow", lambda: MlflowTracker(spec, ml, run_dir), run_dir))
    if cfg.wandb is not None:
        wb = cfg.wandb
        sinks.append(TrackerSink("wandb", lambda: WandbTracker(spec, wb, run_dir), run_dir))
    return sinks


# -- the guard ------------------------------------------------------------------------------
_report_lock = threading.Lock()


class TrackerSink:
    """A tracker behind a queue and a thread: never raises, never blocks the loop.

    ``open_tracker`` builds the real sink (imports, connects, creates the run); it is called
    on the worker thread at the first record. ``errors`` counts calls that raised,
    ``dropped`` records never handed to the tracker (queue full, tracker switched off).
    A terminal ``status`` flushes and closes (waiting up to ``close_timeout_s``).
    """

    def __init__(
        self,
        name: str,
        open_tracker: Callable[[], MetricSink],
        run_dir: Path,
        *,
        max_pending: int = 10_000,
        close_timeout_s: float = 120.0,
    ):
        self.name = name
        self.run_dir = Path(run_dir)
        self.errors = 0
        self.dropped = 0
        self.first_error: str | None = None
        self._open_tracker = open_tracker
        self._close_timeout_s = close_timeout_s
        self._queue: queue.Queue[tuple[str, tuple[Any, ...], dict[str, Any]] | None] = queue.Queue(
            maxsize=max_pending
        )
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=f"tracker-{name}", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    # MetricSink
    def metrics(self, step: int, values: dict[str, float]) -> None:
        self._put("metrics", step, dict(values))

    def samples(self, step: int, rows: list[SampleRow]) -> None:
        self._put("samples", step, [dict(r) for r in rows])

    def checkpoint(self, step: int, path: str) -> None:
        self._put("checkpoint", step, path)

    def status(self, status: str, *, step: int | None = None, error: str | None = None) -> None:
        self._put("status", status, step=step, error=error)
        if status in TERMINAL:
            self.close()

    def truncate_after(self, step: int) -> None:
        self._put("truncate_after", step)

    def close(self) -> None:
        """Let the tracker finish what is queued, close it, write the counts."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=self._close_timeout_s)
        self._thread.join(self._close_timeout_s)
        if self._thread.is_alive():
            self._error("close", TimeoutError(f"still busy after {self._close_timeout_s:.0f} s"))
        self._write_report()
        atexit.unregister(self.close)

    # internals
    def _put(self, method: str, *args: Any, **kwargs: Any) -> None:
        if self._closed:
            return
        try:
            self._queue.put_nowait((method, args, kwargs))
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1:
                log.warning(
                    "tracker %s: falling behind (%d records queued); dropping records",
                    self.name,
                    self._queue.maxsize,
                )
                self._write_report()

    def _work(self) -> None:
        tracker: MetricSink | None = None
        attempts = 0
        while (item := self._queue.get()) is not None:
            method, args, kwargs = item
            if tracker is None:
                if attempts >= MAX_OPEN_ATTEMPTS:
                    self.dropped += 1
                    continue
                attempts += 1
                try:
                    tracker = self._open_tracker()
                except Exception as exc:
                    self._error("open", exc)
                    self.dropped += 1
                    continue
            try:
                getattr(tracker, method)(*args, **kwargs)
            except Exception as exc:
                self._error(method, exc)
        close = getattr(tracker, "close", None)
        if close is not None:
            try:
                close()
            except Exception as exc:
                self._error("close", exc)

    def _error(self, method: str, exc: BaseException) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = f"{method}: {type(exc).__name__}: {exc}"[:2000]
            log.warning(
                "tracker %s failed (the run goes on; later failures are only counted in %s): %s",
                self.name,
                REPORT_FILE,
                self.first_error,
            )
            self._write_report()

    def _write_report(self) -> None:
        path = self.run_dir / REPORT_FILE
        with _report_lock:
            try:
                report = json.loads(path.read_text()) if path.exists() else {}
                if not isinstance(report, dict):
                    report = {}
                report[self.name] = {
                    "errors": self.errors,
                    "dropped": self.dropped,
                    "first_error": self.first_error,
                }
                path.write_text(json.dumps(report, indent=1) + "\n")
            except (OSError, ValueError) as exc:
                log.warning("tracker %s: cannot write %s: %s", self.name, path, exc)


# -- shared helpers -------------------------------------------------------------------------
def flat_params(spec: JobSpec) -> dict[str, str]:
    """The spec as ``{"algorithm.lr": "1e-05", ...}``: what trackers show as parameters."""

    def walk(prefix: str, value: Any) -> Iterator[tuple[str, str]]:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                yield from walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            yield prefix, value if isinstance(value, str) else json.dumps(value)

    return dict(walk("", spec.model_dump(mode="json")))


def _numbers(values: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int | float):
            continue
        out[k] = float(v)
    return out


def sample_table(rows: list[SampleRow], step: int) -> tuple[list[Any], list[list[Any]]]:
    """Samples as (columns, rows of cells): text, numbers, and the verdicts as JSON."""
    data = []
    for row in rows:
        cells: list[Any] = [step]
        for col in SAMPLE_COLUMNS[1:]:
            value = row.get(col)
            if col == "reward":
                cells.append(float(value) if isinstance(value, int | float) else None)
            elif col == "passed":
                cells.append(bool(value))
            elif isinstance(value, str):
                cells.append(value)
            else:
                cells.append("" if value is None else json.dumps(value, default=str))
        cells.append(json.dumps(row.get("verdicts") or {}, default=str))
        data.append(cells)
    return [*SAMPLE_COLUMNS, "verdicts"], data


def _persisted_id(path: Path, make: Callable[[], str]) -> str:
    """An id kept in the run dir, so a resumed run continues the tracker's run."""
    if path.exists():
        text = path.read_text().strip()
        if text:
            return text
    value = make()
    path.write_text(value + "\n")
    return value


# -- TensorBoard ----------------------------------------------------------------------------
class TensorBoardTracker:
    """Event files under ``<run dir>/tensorboard`` (``tensorboard --logdir <run dir>``).

    Scalars per metric name; the spec (YAML) as text at step 0; each step's samples as a
    Markdown table in the text tab. A resume purges the events after the resumed step
    (TensorBoard's own ``purge_step``), so the curves show each step once."""

    def __init__(self, spec: JobSpec, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        self._make = SummaryWriter
        self.spec = spec
        self.log_dir = run_dir / "tensorboard"
        self.writer: Any = None
        self.purge_step: int | None = None

    def _w(self) -> Any:
        if self.writer is None:
            self.writer = self._make(str(self.log_dir), purge_step=self.purge_step)
            if not self.purge_step:  # a fresh run: the spec once
                import yaml

                text = yaml.safe_dump(self.spec.model_dump(mode="json"), sort_keys=False)
                self.writer.add_text("spec", "```yaml\n" + text + "```", 0)
        return self.writer

    def metrics(self, step: int, values: dict[str, float]) -> None:
        w = self._w()
        for name, value in _numbers(values).items():
            w.add_scalar(name, value, step)
        w.flush()

    def samples(self, step: int, rows: list[SampleRow]) -> None:
        columns, data = sample_table(rows, step)

        def cell(v: Any) -> str:
            s = v if isinstance(v, str) else json.dumps(v)
            return s.replace("\\", "\\\\").replace("|", "\\|").replace("\n", "<br>")[:2000]

        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in data]
        self._w().add_text("samples", "\n".join(lines), step)

    def checkpoint(self, step: int, path: str) -> None:
        self._w().add_text("checkpoints", path, step)

    def status(self, status: str, *, step: int | None = None, error: str | None = None) -> None:
        text = status if error is None else f"{status}: {error}"
        self._w().add_text("status", text, step or 0)
        self.writer.flush()

    def truncate_after(self, step: int) -> None:
        if self.writer is None:  # the loop truncates before it writes anything
            self.purge_step = max(step + 1, 0)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# -- MLflow ---------------------------------------------------------------------------------
_MLFLOW_KEY_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-. :/")
_MLFLOW_STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}
MLFLOW_RUN_FILE = "mlflow_run.json"


def mlflow_key(name: str) -> str:
    """MLflow takes letters, digits and ``_-. :/`` in names: ``eval/x/pass@1`` -> ``eval/x/pass_1``."""
    return "".join(c if c in _MLFLOW_KEY_OK else "_" for c in name)


def mlflow_uri(cfg: MlflowSpec, run_dir: Path) -> tuple[str, str | None]:
    """The tracking URI the client uses, and where a new experiment keeps its artifacts.

    An http(s) URI as given (the server decides where artifacts go); a relative path is an
    SQLite database in the run dir, with artifacts in ``<run dir>/mlartifacts``, both
    resolved after symlinks (a link out of the run dir is refused)."""
    uri = cfg.tracking_uri
    if uri.lower().startswith(("http://", "https://")):
        return uri, None
    root = run_dir.resolve()
    db, artifacts = (root / uri).resolve(), (root / "mlartifacts").resolve()
    for path in (db, artifacts):
        if not path.is_relative_to(root):
            raise ValueError(f"logging.mlflow.tracking_uri {uri!r} leaves the run directory")
    db.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db}", artifacts.as_uri()


class MlflowTracker:
    """One MLflow run per job (the same run again on resume: its id is kept in the run dir).

    Metrics by step (names through :func:`mlflow_key`), the spec as params, samples as an
    MLflow table artifact per step (``samples/step_000010.json``), checkpoints as tags, the
    final status as the run's status. MLflow cannot delete points, so after a resume the
    replayed steps appear twice in its history."""

    def __init__(self, spec: JobSpec, cfg: MlflowSpec, run_dir: Path):
        # Fail within seconds, not MLflow's default minutes of retries (the env wins if set).
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        from mlflow.tracking import MlflowClient

        uri, artifacts = mlflow_uri(cfg, run_dir)
        self.client = MlflowClient(tracking_uri=uri)
        exp = self.client.get_experiment_by_name(cfg.experiment)
        if exp is None:
            try:
                exp_id = self.client.create_experiment(cfg.experiment, artifacts)
            except Exception:  # created by another job meanwhile
                exp = self.client.get_experiment_by_name(cfg.experiment)
                if exp is None:
                    raise
                exp_id = exp.experiment_id
        else:
            exp_id = exp.experiment_id
        state_file = run_dir / MLFLOW_RUN_FILE
        state = json.loads(state_file.read_text()) if state_file.exists() else {}
        if state.get("tracking_uri") == uri and state.get("run_id"):
            self.run_id = state["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            run = self.client.create_run(
                exp_id, run_name=spec.name, tags={"rlvr.run_dir": str(run_dir)}
            )
            self.run_id = run.info.run_id
            state_file.write_text(json.dumps({"tracking_uri": uri, "run_id": self.run_id}) + "\n")
            self._log_params(spec)

    def _log_params(self, spec: JobSpec) -> None:
        from mlflow.entities import Param

        params = [Param(mlflow_key(k)[:250], v[:6000]) for k, v in flat_params(spec).items()]
        for i in range(0, len(params), 100):  # MLflow's batch limit
            self.client.log_batch(self.run_id, params=params[i : i + 100])

    def metrics(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        points = [
            Metric(mlflow_key(k), v, now, step)
            for k, v in _numbers(values).items()
            if math.isfinite(v)
        ]
        for i in range(0, len(points), 1000):
            self.client.log_batch(self.run_id, metrics=points[i : i + 1000])

    def samples(self, step: int, rows: list[SampleRow]) -> None:
        columns, data = sample_table(rows, step)
        artifact = f"samples/step_{step:06d}.json"
        try:
            import pandas  # noqa: F401  (log_table needs it; mlflow-skinny does not bring it)
        except ImportError:
            self.client.log_dict(self.run_id, {"columns": columns, "data": data}, artifact)
            return
        table = {c: [r[i] for r in data] for i, c in enumerate(columns)}
        self.client.log_table(self.run_id, data=table, artifact_file=artifact)

    def checkpoint(self, step: int, path: str) -> None:
        self.client.set_tag(self.run_id, "rlvr.checkpoint", path)
        self.client.set_tag(self.run_id, "rlvr.checkpoint_step", str(step))

    def status(self, status: str, *, step: int | None = None, error: str | None = None) -> None:
        if error is not None:
            self.client.set_tag(self.run_id, "rlvr.error", error[:5000])
        if status in _MLFLOW_STATUS:
            self.client.set_terminated(self.run_id, status=_MLFLOW_STATUS[status])

    def truncate_after(self, step: int) -> None:
        """Nothing: MLflow keeps every point; the replayed steps are logged again."""


# -- Weights & Biases (offline) -------------------------------------------------------------
WANDB_ID_FILE = "wandb_run_id"


class WandbTracker:
    """A W&B run in offline mode under ``<run dir>/wandb`` (``wandb sync <run dir>/wandb/
    offline-run-*`` uploads it; the service itself never does). The spec is the run's
    config, samples a ``wandb.Table`` per step; a resume continues the same run id."""

    def __init__(self, spec: JobSpec, cfg: WandbSpec, run_dir: Path):
        import wandb

        self._wandb = wandb
        run_id = _persisted_id(run_dir / WANDB_ID_FILE, lambda: secrets.token_hex(4))
        self.run = wandb.init(
            project=cfg.project,
            mode=cfg.mode,
            dir=str(run_dir),
            name=spec.name,
            id=run_id,
            resume="allow",
            reinit="create_new",
            config=spec.model_dump(mode="json"),
            settings=wandb.Settings(
                console="off", silent=True, x_disable_stats=True, x_disable_meta=True
            ),
        )

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self.run.log(_numbers(values), step=step)

    def samples(self, step: int, rows: list[SampleRow]) -> None:
        columns, data = sample_table(rows, step)
        self.run.log({"samples": self._wandb.Table(columns=columns, data=data)}, step=step)

    def checkpoint(self, step: int, path: str) -> None:
        self.run.summary["checkpoint"] = path
        self.run.summary["checkpoint_step"] = step

    def status(self, status: str, *, step: int | None = None, error: str | None = None) -> None:
        self.run.summary["status"] = status
        if error is not None:
            self.run.summary["error"] = error[:5000]
        if status in TERMINAL:
            self.run.finish(exit_code=0 if status == "succeeded" else 1)

    def truncate_after(self, step: int) -> None:
        """Nothing: W&B drops a step logged below the run's current one on its own."""

    def close(self) -> None:
        self.run.finish()
