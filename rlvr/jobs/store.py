"""The job store: jobs, their per-step metrics, samples, checkpoints and an event log.

One SQLAlchemy schema behind two writers: the API process (submissions, status changes
from the runner) and each job's driver process (metrics, samples, checkpoints), possibly on
another machine. SQLite in WAL mode by default (one file, readers never block the writer),
any SQLAlchemy URL (Postgres) in a cluster.

Three rules keep the data right across crashes and resumes:

* metrics are keyed by ``(job, step, name)`` and written with an upsert, so a step that is
  recorded twice (a resumed run replaying it) is stored once;
* a terminal status (``succeeded``, ``failed``, ``cancelled``) is sticky: a late write from a
  dying driver cannot revive or relabel a job; only :meth:`JobStore.reopen` (resume) does;
* every change a watcher cares about appends a row to ``events``, whose autoincrement id
  is the cursor of the Server-Sent Events stream (``Last-Event-ID``). Writers of one job take
  turns (a lock on its ``jobs`` row), so its events become visible in id order and a cursor
  never passes an event that is yet to commit (PostgreSQL hands out ids at insert time).

On PostgreSQL (``postgresql+psycopg://user:password@host:5432/db``) connections time out
after 10 s, lock waits after 30 s (SQLite's busy timeout), and a session left idle inside a
transaction (a stopped process) is closed by the server after 60 s, releasing its locks.

    >>> store = JobStore("sqlite:///:memory:")
    >>> job = store.create_job(JobSpec(name="demo"), run_dir="/tmp/runs/demo")
    >>> store.record_metrics(job.id, 1, {"reward/mean": 0.5})
    >>> store.metric_series(job.id)["reward/mean"]
    [(1, 0.5)]
"""

from __future__ import annotations

import json
import math
import random
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast, get_args

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, InterfaceError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import StaticPool

from rlvr.config import JobSpec

SCHEMA_VERSION = 2
# How a database of an older schema version is brought up to the next one (in a transaction,
# under the same lock as creating the schema): version -> its statements.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (  # jobs get an owner and a priority (the admission queue, per-user tokens)
        "ALTER TABLE jobs ADD COLUMN owner VARCHAR(64) NOT NULL DEFAULT 'admin'",
        "ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0",
    ),
}

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
STATUSES: tuple[JobStatus, ...] = get_args(JobStatus)
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
ACTIVE = frozenset({"queued", "running"})


# INTEGER columns (steps, event ids) are 32-bit on PostgreSQL, which refuses a larger
# parameter outright even in a comparison.
_INT_MAX = 2**31 - 1
_METRIC_NAME_MAX = 128  # metrics.name is VARCHAR(128), enforced by PostgreSQL
_SCHEMA_LOCK_KEY = 0x726C7672  # pg_advisory_xact_lock key ("rlvr") for creating the schema


class SchemaVersionError(RuntimeError):
    """The database was created by an rlvr with a different schema."""


class StoreUnavailableError(ValueError):
    """The database URL cannot be opened: malformed, its driver is not installed, or the
    server refuses or does not answer. A ``ValueError``: a bad ``RLVR_DB_URL`` is bad input."""


# -- tables ----------------------------------------------------------------------------


class _Base(DeclarativeBase):
    pass


class _Meta(_Base):
    __tablename__ = "rlvr_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class _Job(_Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(96), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), index=True)
    spec_json: Mapped[str] = mapped_column(Text)
    run_dir: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    step: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Ray bookkeeping: attempt 1 is submitted as <id>, a resume as <id>-r<attempt>
    # (Ray never reuses a submission id). submission_id is None until dispatched.
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    resume: Mapped[bool] = mapped_column(Boolean, default=False)
    submission_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    ray_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # who submitted it (a user of the tokens file; "admin" for the single API token) and
    # its place in the admission queue: higher priority first, then oldest first
    owner: Mapped[str] = mapped_column(String(64), default="admin", server_default="admin")
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class _Metric(_Base):
    __tablename__ = "metrics"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)  # None: NaN/inf


class _Sample(_Base):
    __tablename__ = "samples"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    row_json: Mapped[str] = mapped_column(Text)


class _Checkpoint(_Base):
    __tablename__ = "checkpoints"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)


class _Event(_Base):
    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    ts: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(16))  # status, metrics, samples, checkpoint, truncate
    payload_json: Mapped[str] = mapped_column(Text)
    __table_args__ = (Index("ix_events_job_id_id", "job_id", "id"),)


_ADMISSION_ORDER = (_Job.priority.desc(), _Job.created_at, _Job.id)


# -- records handed out ------------------------------------------------------------------


@dataclass
class JobRecord:
    """A job as stored (the spec as the validated, normalised JSON dict)."""

    id: str
    name: str
    status: JobStatus
    spec: dict[str, Any]
    run_dir: str
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    step: int
    error: str | None
    attempt: int
    resume: bool
    submission_id: str | None
    ray_status: str | None
    owner: str = "admin"
    priority: int = 0

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


@dataclass
class EventRecord:
    id: int
    job_id: str
    ts: float
    kind: str
    payload: dict[str, Any] = field(default_factory=dict)


def _job_record(row: _Job) -> JobRecord:
    return JobRecord(
        id=row.id,
        name=row.name,
        status=cast(JobStatus, row.status),  # set_status writes only STATUSES
        spec=json.loads(row.spec_json),
        run_dir=row.run_dir,
        created_at=row.created_at,
        updated_at=row.updated_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        step=row.step or 0,
        error=row.error,
        attempt=row.attempt,
        resume=bool(row.resume),
        submission_id=row.submission_id,
        ray_status=row.ray_status,
        owner=row.owner or "admin",
        priority=row.priority or 0,
    )


def _text(value: str) -> str:
    """PostgreSQL text cannot hold NUL; a crashed driver's log tail may. Shown as U+FFFD."""
    return value.replace("\x00", "\ufffd")


def _clamp(n: int) -> int:
    """A bound compared with an INTEGER column, held within that column's range (every
    stored value is, so results do not change; PostgreSQL would refuse the parameter)."""
    return max(-_INT_MAX - 1, min(_INT_MAX, int(n)))


def _step(step: Any) -> int:
    """A step to store: a plain int (numpy scalars too) within the INTEGER column's range."""
    value = int(step)
    if not -_INT_MAX - 1 <= value <= _INT_MAX:
        raise ValueError(f"step {value} is out of range: steps are 32-bit integers")
    return value


def _finite(value: Any) -> float | None:
    """JSON and Postgres both choke on NaN/inf: store them as NULL (a gap in the chart)."""
    x = float(value)
    return x if math.isfinite(x) else None


def _dumps(obj: Any) -> str:
    """JSON for a sample row or event; NaN/inf become null, odd objects their ``str``
    (a verdict's details may hold sympy expressions, paths, numpy scalars...)."""
    try:
        return json.dumps(obj, default=str, allow_nan=False)
    except ValueError:
        pass

    def clean(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [clean(v) for v in x]
        return x

    return json.dumps(clean(obj), default=str, allow_nan=False)


def new_job_id(name: str) -> str:
    """``<name>-<8 hex>``: readable in ``ray job list`` and unique enough for one service."""
    return f"{name[:48]}-{secrets.token_hex(4)}"


# -- engine ----------------------------------------------------------------------------


def make_engine(url: str) -> Engine:
    """An engine for ``url``. SQLite files get WAL, a busy timeout and their directory;
    PostgreSQL goes through psycopg 3 (also for a plain ``postgresql://``) with timeouts."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":  # SQLAlchemy's default would be psycopg2
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() != "sqlite":
        connect_args: dict[str, Any] = {}
        if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in (
            "psycopg",
            "psycopg2",
        ):
            connect_args = _postgres_connect_args(parsed.query)
        return create_engine(parsed, pool_pre_ping=True, future=True, connect_args=connect_args)
    database = parsed.database or ""
    kwargs: dict[str, Any] = {"connect_args": {"timeout": 30, "check_same_thread": False}}
    if database in ("", ":memory:"):
        kwargs["poolclass"] = StaticPool  # one shared connection, or every session sees a new db
    else:
        path = Path(database).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        parsed = parsed.set(database=str(path))
    engine = create_engine(parsed, future=True, **kwargs)

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn, _record):
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=30000")  # first: the pragmas below may wait too
        cur.execute("PRAGMA journal_mode=WAL")  # the driver writes while the API reads
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    return engine


def _postgres_connect_args(query: Any) -> dict[str, Any]:
    """libpq settings so that no call waits forever (the URL's own settings win)."""
    args: dict[str, Any] = {}
    if "connect_timeout" not in query:
        args["connect_timeout"] = 10
    if "options" not in query:
        args["options"] = (
            "-c lock_timeout=30s "  # like SQLite's busy timeout
            "-c idle_in_transaction_session_timeout=60s"  # a stopped process frees its locks
        )
    return args


def _upsert(session: Session, table: Any, rows: list[dict[str, Any]], keys: list[str]) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE, in the dialect at hand."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        from sqlalchemy.dialects import postgresql, sqlite

        insert: Any = sqlite.insert if dialect == "sqlite" else postgresql.insert
        stmt = insert(table)
        updates = {c: stmt.excluded[c] for c in rows[0] if c not in keys}
        session.execute(stmt.on_conflict_do_update(index_elements=keys, set_=updates), rows)
        return
    for row in rows:  # other dialects: delete-then-insert inside the same transaction
        session.execute(delete(table).filter_by(**{k: row[k] for k in keys}))
        session.execute(table.insert(), [row])


# -- the store -------------------------------------------------------------------------


class JobStore:
    """Jobs and everything they report, behind one SQLAlchemy engine.

    Creates the schema on first use and refuses a database whose schema version differs
    (:class:`SchemaVersionError`), rather than misreading it. Thread-safe: every method
    opens its own short session.
    """

    def __init__(self, url: str):
        self.url = url
        try:  # a malformed URL, a driver not installed, a directory that cannot be made
            self.engine = make_engine(url)
        except (ArgumentError, ImportError, OSError) as exc:
            raise StoreUnavailableError(self._unavailable(exc)) from None
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        try:
            self._create_or_check_schema_when_free()
        except (OperationalError, InterfaceError) as exc:  # refused, unreachable, timed out
            self.engine.dispose()
            raise StoreUnavailableError(self._unavailable(exc)) from None
        except SchemaVersionError:
            self.engine.dispose()  # no pooled connection left behind
            raise

    # -- schema ------------------------------------------------------------------------
    def _create_or_check_schema_when_free(self, wait_s: float = 30.0) -> None:
        """:meth:`_create_or_check_schema`, again while a new SQLite file is locked: SQLite
        answers "database is locked" at once, without its busy wait, to a connection that
        switches a new file to WAL (or upgrades a read) while another creates the schema."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return self._create_or_check_schema()
            except OperationalError as exc:
                locked = "database is locked" in str(exc) and self.engine.dialect.name == "sqlite"
                if not locked or time.monotonic() > deadline:
                    raise
                time.sleep(random.uniform(0.02, 0.2))

    def _create_or_check_schema(self) -> None:
        with self.engine.connect() as conn:
            if self._schema_version(conn) == SCHEMA_VERSION:  # the usual case: no lock needed
                return
        # Services and drivers may start together: one creates (or migrates), the others
        # wait and check.
        with self.engine.connect() as conn:
            dialect = conn.dialect.name
            if dialect == "postgresql":  # DDL is transactional there: all or nothing
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SCHEMA_LOCK_KEY})
            elif dialect == "sqlite":  # the write lock now, not at the first CREATE
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            found = self._schema_version(conn)
            if found is None:
                _Base.metadata.create_all(conn)
                conn.execute(insert(_Meta).values(key="schema_version", value=str(SCHEMA_VERSION)))
            elif found != SCHEMA_VERSION:
                self._migrate(conn, found)
            conn.commit()

    def _schema_version(self, conn: Connection) -> int | None:
        """The version of this rlvr's schema in the database, None when there is none;
        raises if the tables there are not rlvr's."""
        tables = set(inspect(conn).get_table_names())
        if _Meta.__tablename__ in tables:
            value = conn.scalar(select(_Meta.value).where(_Meta.key == "schema_version"))
            if value is None or not str(value).isdigit():
                raise self._version_error(value)
            return int(value)
        if tables & {"jobs", "metrics", "samples", "events", "checkpoints"}:
            raise SchemaVersionError(
                f"the database at {self._safe_url()} has tables named like rlvr's but no "
                "rlvr_meta version row: point RLVR_DB_URL at a database of its own"
            )
        return None

    def _migrate(self, conn: Connection, found: int) -> None:
        """Bring an older schema up to :data:`SCHEMA_VERSION` (a newer one is refused)."""
        if found > SCHEMA_VERSION or any(
            v not in _MIGRATIONS for v in range(found, SCHEMA_VERSION)
        ):
            raise self._version_error(found)
        for version in range(found, SCHEMA_VERSION):
            for statement in _MIGRATIONS[version]:
                conn.exec_driver_sql(statement)
        conn.execute(
            update(_Meta).where(_Meta.key == "schema_version").values(value=str(SCHEMA_VERSION))
        )

    def _version_error(self, found: object) -> SchemaVersionError:
        return SchemaVersionError(
            f"the job database at {self._safe_url()} has schema version {found}, "
            f"this rlvr needs {SCHEMA_VERSION}: point RLVR_DB_URL at a new database "
            "or migrate this one"
        )

    def _safe_url(self) -> str:
        try:
            return make_url(self.url).render_as_string(hide_password=True)
        except ArgumentError:
            return "(an unparsable URL)"

    def _unavailable(self, exc: Exception) -> str:
        cause = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        try:
            password = make_url(self.url).password
        except ArgumentError:
            password = None
        if password and len(str(password)) >= 4:  # (a shorter one would mangle the text)
            cause = cause.replace(str(password), "***")
        hint = (
            "set RLVR_DB_URL to a SQLAlchemy URL, e.g. sqlite:///path/to/rlvr.db or "
            "postgresql+psycopg://user:password@host:5432/rlvr"
        )
        if isinstance(exc, ImportError | ArgumentError) and "postgres" in self.url:
            hint += " (psycopg 3 is the driver installed with rlvr: postgresql+psycopg://)"
        return f"cannot open the job database {self._safe_url()}: {cause}; {hint}"

    def close(self) -> None:
        self.engine.dispose()

    # -- jobs --------------------------------------------------------------------------
    def create_job(
        self,
        spec: JobSpec,
        *,
        run_dir: str,
        job_id: str | None = None,
        owner: str = "admin",
        priority: int = 0,
    ) -> JobRecord:
        """Insert a ``queued`` job for ``spec``, owned by ``owner``; the runner admits it to
        Ray when the cluster has room, higher ``priority`` first (see :meth:`queue_positions`)."""
        job_id = job_id or new_job_id(spec.name)
        now = time.time()
        row = _Job(
            id=job_id,
            name=spec.name,
            status="queued",
            spec_json=spec.to_json(),
            run_dir=run_dir,
            created_at=now,
            updated_at=now,
            step=0,
            attempt=1,
            resume=False,
            owner=owner,
            priority=_clamp(priority),
        )
        with self._session.begin() as s:
            s.add(row)
            s.flush()  # the job row first: events reference it
            self._add_event(s, job_id, "status", {"status": "queued", "step": 0, "error": None})
        return _job_record(row)

    def get_job(self, job_id: str) -> JobRecord | None:
        if "\x00" in job_id:  # no id holds NUL (and PostgreSQL cannot even compare one)
            return None
        with self._session() as s:
            row = s.get(_Job, job_id)
            return _job_record(row) if row else None

    def list_jobs(
        self,
        *,
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
        owner: str | None = None,
    ) -> tuple[list[JobRecord], int]:
        """Newest first, of one ``owner`` or everyone's; returns (page, total matching)."""
        query = select(_Job)
        count = select(func.count()).select_from(_Job)
        if status:
            query = query.where(_Job.status == status)
            count = count.where(_Job.status == status)
        if owner is not None:
            query = query.where(_Job.owner == owner)
            count = count.where(_Job.owner == owner)
        with self._session() as s:
            rows = s.scalars(
                query.order_by(_Job.created_at.desc(), _Job.id)
                .limit(_clamp(max(limit, 0)))
                .offset(_clamp(max(offset, 0)))
            ).all()
            total = s.scalar(count) or 0
        return [_job_record(r) for r in rows], int(total)

    def jobs_for_runner(self) -> list[JobRecord]:
        """Jobs the runner must look at: not yet dispatched, or whose Ray job may still run;
        in admission order (higher priority first, then oldest first)."""
        with self._session() as s:
            rows = s.scalars(
                select(_Job)
                .where((_Job.status.in_(ACTIVE)) | (_Job.ray_status.in_(("PENDING", "RUNNING"))))
                .order_by(*_ADMISSION_ORDER)
            ).all()
        return [_job_record(r) for r in rows]

    def queue_positions(self) -> dict[str, int]:
        """``{job id: 1-based place}`` of every queued job not yet handed to Ray, in the
        order the runner admits them: higher priority first, then oldest first."""
        query = (
            select(_Job.id)
            .where(_Job.status == "queued", _Job.submission_id.is_(None))
            .order_by(*_ADMISSION_ORDER)
        )
        with self._session() as s:
            return {job_id: i for i, job_id in enumerate(s.scalars(query), start=1)}

    def set_status(
        self,
        job_id: str,
        status: str,
        *,
        step: int | None = None,
        error: str | None = None,
        attempt: int | None = None,
    ) -> bool:
        """Move a job to ``status``. A terminal status is never left (see :meth:`reopen`),
        and a write from another ``attempt`` than the job's current one is ignored.
        Returns whether anything changed."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        with self._session.begin() as s:
            row = self._locked_job(s, job_id)
            if row is None or row.status in TERMINAL:
                return False
            if attempt is not None and attempt != row.attempt:
                return False
            now = time.time()
            if row.status == status:  # e.g. the runner and the driver both saying `running`
                if step is not None and step > (row.step or 0):
                    row.step, row.updated_at = _step(step), now
                return False
            row.status = status
            row.updated_at = now
            if step is not None:
                step = _step(step)
                row.step = max(row.step or 0, step) if status == "running" else step
            if error is not None:
                row.error = _text(error[-20_000:])
            if status == "running" and row.started_at is None:
                row.started_at = now
            if status in TERMINAL:
                row.finished_at = now
            self._add_event(
                s, job_id, "status", {"status": status, "step": row.step, "error": row.error}
            )
            return True

    def set_dispatch(
        self, job_id: str, *, submission_id: str | None = None, ray_status: str | None = None
    ) -> None:
        """Record the Ray side of a job (its submission id, the last Ray status seen)."""
        values: dict[str, Any] = {"updated_at": time.time()}
        if submission_id is not None:
            values["submission_id"] = submission_id
        if ray_status is not None:
            values["ray_status"] = ray_status
        with self._session.begin() as s:
            s.execute(update(_Job).where(_Job.id == job_id).values(**values))

    def reopen(self, job_id: str) -> JobRecord:
        """Queue a failed or cancelled job again, to be resumed from its last checkpoint.

        Raises ``ValueError`` when the job is not in a resumable state.
        """
        with self._session.begin() as s:
            row = self._locked_job(s, job_id)
            if row is None:
                raise KeyError(job_id)
            if row.status not in ("failed", "cancelled"):
                raise ValueError(
                    f"job {job_id} is {row.status}; only failed or cancelled jobs resume"
                )
            if row.ray_status in ("PENDING", "RUNNING"):
                raise ValueError(
                    f"job {job_id}'s previous Ray job {row.submission_id} is still stopping; "
                    "try again in a few seconds"
                )
            row.error = None
            row.finished_at = None
            self._queue_new_attempt(s, row)
            return _job_record(row)

    def requeue(self, job_id: str) -> bool:
        """Queue a ``running`` (or already dispatched) job again as a new attempt that
        resumes from its last checkpoint: the service stopped or lost the Ray head that ran
        it. Status writes of the interrupted attempt are ignored from now on. Returns
        whether the job was requeued (a terminal job is left alone)."""
        with self._session.begin() as s:
            row = self._locked_job(s, job_id)
            if row is None or row.status in TERMINAL:
                return False
            if row.status == "queued" and row.submission_id is None:
                return False  # not dispatched yet: nothing to interrupt
            self._queue_new_attempt(s, row)
            return True

    def _queue_new_attempt(self, s: Session, row: _Job) -> None:
        """``queued`` again as the next attempt, resuming from the last checkpoint."""
        row.status = "queued"
        row.attempt += 1
        row.resume = True
        row.submission_id = None
        row.ray_status = None
        row.updated_at = time.time()
        self._add_event(s, row.id, "status", {"status": "queued", "step": row.step, "error": None})

    # -- what a run reports ------------------------------------------------------------
    def record_metrics(self, job_id: str, step: int, values: dict[str, float]) -> None:
        """Upsert one step's metrics (a replayed step overwrites, never duplicates).

        Non-numbers are dropped, NaN/inf stored as gaps; a name longer than 128 characters
        is a ``ValueError`` (nothing of the step is written)."""
        step = _step(step)
        rows: list[dict[str, Any]] = [
            {"job_id": job_id, "step": step, "name": _text(str(k)), "value": _finite(v)}
            for k, v in values.items()
            if _is_number(v)
        ]
        for r in rows:
            if len(r["name"]) > _METRIC_NAME_MAX:
                raise ValueError(
                    f"metric name {r['name'][:40]!r}... is {len(r['name'])} characters; "
                    f"the job store keeps names of at most {_METRIC_NAME_MAX}"
                )
        clean = {r["name"]: r["value"] for r in rows}
        with self._session.begin() as s:
            self._lock_job(s, job_id)
            _upsert(s, _Metric.__table__, rows, ["job_id", "step", "name"])
            s.execute(
                update(_Job)
                .where(_Job.id == job_id, _Job.step < step)
                .values(step=step, updated_at=time.time())
            )
            self._add_event(s, job_id, "metrics", {"step": step, "values": clean})

    def record_samples(self, job_id: str, step: int, rows: Iterable[dict[str, Any]]) -> None:
        step = _step(step)
        rows = list(rows)
        data = [
            {"job_id": job_id, "step": step, "idx": i, "row_json": _dumps(r)}
            for i, r in enumerate(rows)
        ]
        with self._session.begin() as s:
            self._lock_job(s, job_id)
            # A replayed step may log fewer samples than the first time: replace them all.
            s.execute(delete(_Sample).where(_Sample.job_id == job_id, _Sample.step == step))
            if data:
                s.execute(_Sample.__table__.insert(), data)  # type: ignore[attr-defined]
            self._add_event(s, job_id, "samples", {"step": step, "count": len(data)})

    def record_checkpoint(self, job_id: str, step: int, path: str) -> None:
        step, path = _step(step), _text(str(path))
        row = {"job_id": job_id, "step": step, "path": path, "created_at": time.time()}
        with self._session.begin() as s:
            self._lock_job(s, job_id)
            _upsert(s, _Checkpoint.__table__, [row], ["job_id", "step"])
            self._add_event(s, job_id, "checkpoint", {"step": step, "path": path})

    def truncate_after(self, job_id: str, step: int) -> None:
        """Forget metrics and samples after ``step`` (a resume from that step's checkpoint)."""
        step = _step(step)
        with self._session.begin() as s:
            self._lock_job(s, job_id)
            s.execute(delete(_Metric).where(_Metric.job_id == job_id, _Metric.step > step))
            s.execute(delete(_Sample).where(_Sample.job_id == job_id, _Sample.step > step))
            s.execute(update(_Job).where(_Job.id == job_id).values(step=step))
            self._add_event(s, job_id, "truncate", {"step": step})

    # -- reading -----------------------------------------------------------------------
    def metric_series(
        self,
        job_id: str,
        *,
        names: Iterable[str] | None = None,
        since_step: int | None = None,
    ) -> dict[str, list[tuple[int, float | None]]]:
        """``{name: [(step, value), ...]}`` ordered by step; ``since_step`` is exclusive."""
        query = select(_Metric.name, _Metric.step, _Metric.value).where(_Metric.job_id == job_id)
        names = [_text(n) for n in names or []]  # stored names had NUL replaced too
        if names:
            query = query.where(_Metric.name.in_(names))
        if since_step is not None:
            query = query.where(_Metric.step > _clamp(since_step))
        out: dict[str, list[tuple[int, float | None]]] = {}
        with self._session() as s:
            for name, step, value in s.execute(query.order_by(_Metric.name, _Metric.step)):
                out.setdefault(name, []).append((step, value))
        return out

    def latest_metrics(self, job_id: str) -> dict[str, float | None]:
        """The newest value of every metric (eval metrics come every N steps, so per name)."""
        newest = (
            select(_Metric.name, func.max(_Metric.step).label("step"))
            .where(_Metric.job_id == job_id)
            .group_by(_Metric.name)
            .subquery()
        )
        query = (
            select(_Metric.name, _Metric.value)
            .join(newest, (_Metric.name == newest.c.name) & (_Metric.step == newest.c.step))
            .where(_Metric.job_id == job_id)
        )
        with self._session() as s:
            return {name: value for name, value in s.execute(query)}

    def samples(
        self, job_id: str, *, step: int | None = None, limit: int = 50, offset: int = 0
    ) -> list[dict[str, Any]]:
        """Sample rows (newest step first), each with its ``step``."""
        query = select(_Sample).where(_Sample.job_id == job_id)
        if step is not None:
            query = query.where(_Sample.step == _clamp(step))
        query = query.order_by(_Sample.step.desc(), _Sample.idx)
        query = query.limit(_clamp(max(limit, 0))).offset(_clamp(max(offset, 0)))
        with self._session() as s:
            rows = s.scalars(query).all()
        out = []
        for r in rows:
            row = json.loads(r.row_json)
            row["step"] = r.step
            out.append(row)
        return out

    def checkpoints(self, job_id: str) -> list[dict[str, Any]]:
        query = select(_Checkpoint).where(_Checkpoint.job_id == job_id).order_by(_Checkpoint.step)
        with self._session() as s:
            return [
                {"step": c.step, "path": c.path, "created_at": c.created_at}
                for c in s.scalars(query)
            ]

    def events_after(
        self, job_id: str, after_id: int = 0, *, limit: int = 500
    ) -> list[EventRecord]:
        query = (
            select(_Event)
            .where(_Event.job_id == job_id, _Event.id > _clamp(after_id))
            .order_by(_Event.id)
            .limit(_clamp(max(limit, 0)))
        )
        with self._session() as s:
            return [
                EventRecord(e.id, e.job_id, e.ts, e.kind, json.loads(e.payload_json))
                for e in s.scalars(query)
            ]

    def last_event_id(self, job_id: str) -> int:
        with self._session() as s:
            return int(s.scalar(select(func.max(_Event.id)).where(_Event.job_id == job_id)) or 0)

    def count_by_status(self) -> dict[str, int]:
        with self._session() as s:
            counts = dict(s.execute(select(_Job.status, func.count()).group_by(_Job.status)).all())
        return {st: int(counts.get(st, 0)) for st in STATUSES}

    # -- internals ---------------------------------------------------------------------
    @staticmethod
    def _lock_job(s: Session, job_id: str) -> None:
        """Take the job's lock before anything that reads the job to decide a write, or
        appends an event (so a job's events commit in the order of their ids): its row lock
        on PostgreSQL; on SQLite the database's write lock, by a write that changes nothing.
        SQLite has one writer at a time, but Python's sqlite3 begins a transaction only at
        its first write: a status read before that is not locked, and two processes (the
        service's runner and the job's driver) would both read ``queued`` and both write
        ``running``, each with its event. After this write the transaction holds the lock,
        and what it reads next is the latest commit."""
        if s.get_bind().dialect.name == "sqlite":
            s.execute(
                update(_Job)
                .where(_Job.id == job_id)
                .values(id=_Job.id)
                .execution_options(synchronize_session=False)  # (no read before it)
            )
        else:
            s.execute(select(_Job.id).where(_Job.id == job_id).with_for_update())

    @classmethod
    def _locked_job(cls, s: Session, job_id: str) -> _Job | None:
        """The job's row, read under :meth:`_lock_job` (which already holds the lock)."""
        cls._lock_job(s, job_id)
        return s.get(_Job, job_id)

    @staticmethod
    def _add_event(s: Session, job_id: str, kind: str, payload: dict[str, Any]) -> None:
        s.add(_Event(job_id=job_id, ts=time.time(), kind=kind, payload_json=_dumps(payload)))


def _is_number(v: Any) -> bool:
    """numpy / torch scalars count as numbers too."""
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return not isinstance(v, str | bytes | bool)
