"""The driver's :class:`~rlvr.train.sink.MetricSink` that writes into the job store."""

from __future__ import annotations

from rlvr.jobs.store import JobStore
from rlvr.train.sink import SampleRow


class StoreSink:
    """Reports one attempt of one job to the :class:`JobStore`.

    Status writes carry the attempt number, so a driver from an earlier attempt that is
    still dying cannot relabel the job once it has been resumed.
    """

    def __init__(self, store: JobStore, job_id: str, *, attempt: int = 1):
        self.store = store
        self.job_id = job_id
        self.attempt = attempt

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self.store.record_metrics(self.job_id, step, values)

    def samples(self, step: int, rows: list[SampleRow]) -> None:
        self.store.record_samples(self.job_id, step, rows)

    def checkpoint(self, step: int, path: str) -> None:
        self.store.record_checkpoint(self.job_id, step, path)

    def status(self, status: str, *, step: int | None = None, error: str | None = None) -> None:
        self.store.set_status(self.job_id, status, step=step, error=error, attempt=self.attempt)

    def truncate_after(self, step: int) -> None:
        self.store.truncate_after(self.job_id, step)
