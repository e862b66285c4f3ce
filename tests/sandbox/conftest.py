"""Fixtures for the sandbox tests: a real bubblewrap sandbox with its own uid range."""

from __future__ import annotations

import os
import random

import pytest

from sandbox.local import LocalSandbox


def unique_uid_base() -> int:
    """A uid range no other sandbox on this machine uses (peers run tests in parallel)."""
    return 63000 + random.randrange(0, 2000) * 16


def processes_of(uids: range) -> list[tuple[int, int, str]]:
    """(pid, uid, state) of every host process whose real uid is in ``uids``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                status = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        uid = int(status["Uid"].split()[0])
        if uid in uids:
            found.append((int(entry), uid, status["State"].strip()))
    return found


@pytest.fixture(scope="session")
def uid_base():
    """A fresh uid range per call: ``uid_base()``."""
    return unique_uid_base


@pytest.fixture(scope="session")
def procs_of():
    """``procs_of(uids)``: host processes running as any of ``uids``."""
    return processes_of


@pytest.fixture(scope="session")
def local_sb():
    """The full local sandbox: slot uids, cgroups and seccomp where this machine allows."""
    with LocalSandbox(concurrency=16, uid_base=unique_uid_base()) as sb:
        yield sb
