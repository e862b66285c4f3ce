"""The service's back end: the job store (SQLAlchemy), the Ray job runner, and the driver
that a Ray job runs (``python -m rlvr.jobs.driver``)."""
