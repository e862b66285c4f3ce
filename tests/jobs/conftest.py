"""Fixtures for the job service's tests: a throwaway PostgreSQL server for the job store.

``postgres_url`` starts one real PostgreSQL cluster per test session (``initdb`` + ``pg_ctl``
in a temporary directory, 127.0.0.1 on a free port, password auth) and removes it at the end;
``postgres_db_url`` gives each test a fresh, empty database on it. They skip only when the
server binaries are not installed (``make system-deps`` as root installs them).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from itertools import count
from pathlib import Path

import pytest

from rlvr.net import free_port

_PG_USER = "rlvr"
_SUBPROCESS_TIMEOUT_S = 120


def _postgres_bin_dir() -> Path | None:
    """Where initdb and pg_ctl live: Debian/Ubuntu's newest /usr/lib/postgresql/<major>/bin
    (off PATH there), else PATH."""
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    if debian:
        return debian[-1].parent
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).resolve().parent
    return None


class _Cluster:
    """One PostgreSQL cluster in ``base``. PostgreSQL refuses to run as root, so under root
    its programs run as ``nobody`` (and ``base`` is handed to that user)."""

    def __init__(self, bin_dir: Path, base: Path):
        self.bin_dir, self.base = bin_dir, base
        self.data, self.log = base / "data", base / "postgres.log"
        self.password = secrets.token_hex(12)
        self.port = 0
        self._as: dict = {}
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(base, nobody.pw_uid, nobody.pw_gid)
            self._as = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LC_ALL": "C",
            "HOME": str(self.base),
        }
        return subprocess.run(
            [str(self.bin_dir / args[0]), *args[1:]],
            cwd=self.base,
            env=env,
            capture_output=True,
            text=True,
            timeout=_SUBPROCESS_TIMEOUT_S,
            **self._as,
        )

    def init(self) -> None:
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._as:
            os.chown(pwfile, self._as["user"], self._as["group"])
        done = self._run(
            "initdb", "-D", str(self.data), "-U", _PG_USER, f"--pwfile={pwfile}",
            "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        pwfile.unlink()
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{done.stdout}\n{done.stderr}")

    def start(self) -> None:
        # Loopback only, a socket directory of its own, and no durability (a test database).
        for _ in range(3):  # another process may take the free port before the server binds
            self.port = free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {self.port} "
                f"-c unix_socket_directories={self.base} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=60 -c shared_buffers=16MB"
            )
            done = self._run(
                "pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w",
                "-t", "60", "-o", options,
            )  # fmt: skip
            if done.returncode == 0:
                return
        log = self.log.read_text() if self.log.exists() else ""
        raise RuntimeError(f"pg_ctl start failed:\n{done.stdout}\n{done.stderr}\n{log[-4000:]}")

    def stop(self) -> None:
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w", "-t", "60")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{_PG_USER}:{self.password}@127.0.0.1:{self.port}/{database}"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """``postgresql+psycopg://`` URL of the ``postgres`` database on a throwaway server."""
    bin_dir = _postgres_bin_dir()
    if bin_dir is None:
        pytest.skip(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: "
            "apt-get install postgresql (or `make system-deps` as root)"
        )
    # Not under pytest's tmp_path: that is private to the user running pytest (0700), and
    # under root the server runs as another user.
    base = Path(tempfile.mkdtemp(prefix="rlvr-pg-"))
    cluster = _Cluster(bin_dir, base)
    try:
        cluster.init()
        cluster.start()
        yield cluster.url()
    finally:
        if cluster.port:
            cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


_db_numbers = count(1)


@pytest.fixture
def postgres_db_url(postgres_url: str) -> str:
    """A new, empty database on the session's PostgreSQL server, for one test."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(postgres_url)
    name = f"rlvr_test_{next(_db_numbers)}"
    with psycopg.connect(
        host=url.host, port=url.port, user=url.username, password=url.password,
        dbname=url.database, autocommit=True, connect_timeout=10,
    ) as conn:  # fmt: skip
        # FILE_COPY (PostgreSQL 15+) skips WAL-logging the copied template: faster here.
        strategy = " STRATEGY FILE_COPY" if conn.info.server_version >= 150000 else ""
        conn.execute(f"CREATE DATABASE {name}{strategy}")
    return url.set(database=name).render_as_string(hide_password=False)
