"""The run directory: a :class:`~rlvr.train.sink.MetricSink` on plain files.

Layout of ``run_dir``::

    spec.json          the job spec as run
    metrics.jsonl      one {"step": N, "time": t, <metric>: value, ...} line per step
    samples.jsonl      one line per sample row (SampleRow, with its step)
    status.json        {"status": ..., "step": ..., "error": ..., "time": ...}
    checkpoints/       step_N/ (an HF model directory + optimizer + trainer state)
    curves.png         reward and eval-accuracy curves (written at the end)

Lines are appended and flushed per record, so a killed run leaves every completed step on
disk. ``truncate_after(step)`` rewrites both ``.jsonl`` files without the records of later
steps (atomically, through a temp file and ``os.replace``), which is how a resumed run
writes every step's metrics exactly once.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from rlvr.train.sink import SampleRow

METRICS_FILE = "metrics.jsonl"
SAMPLES_FILE = "samples.jsonl"
STATUS_FILE = "status.json"


def _json_safe(value: Any) -> Any:
    """NaN/inf are not JSON: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All complete records of a ``.jsonl`` file (a torn last line from a kill is skipped)."""
    p = Path(path)
    if not p.exists():
        return []
    out = []
    for line in p.read_text().splitlines():
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


class RunDirSink:
    """Writes metrics, samples, checkpoint records and status into ``run_dir``."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / METRICS_FILE
        self.samples_path = self.run_dir / SAMPLES_FILE
        self.status_path = self.run_dir / STATUS_FILE

    def _append(self, path: Path, records: list[dict[str, Any]]) -> None:
        with path.open("a") as f:
            for rec in records:
                f.write(json.dumps(_json_safe(rec), default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self._append(self.metrics_path, [{"step": int(step), "time": time.time(), **values}])

    def samples(self, step: int, rows: list[SampleRow]) -> None:
        self._append(self.samples_path, [{**row, "step": int(step)} for row in rows])

    def checkpoint(self, step: int, path: str) -> None:
        pass  # the checkpoint directory itself is the record (checkpoints/step_N)

    def status(self, status: str, *, step: int | None = None, error: str | None = None) -> None:
        tmp = self.status_path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps({"status": status, "step": step, "error": error, "time": time.time()})
        )
        os.replace(tmp, self.status_path)

    def truncate_after(self, step: int) -> None:
        for path in (self.metrics_path, self.samples_path):
            if not path.exists():
                continue
            kept = [r for r in read_jsonl(path) if int(r.get("step", 0)) <= step]
            tmp = path.with_suffix(".tmp")
            with tmp.open("w") as f:
                for rec in kept:
                    f.write(json.dumps(rec) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
