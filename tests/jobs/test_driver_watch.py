"""A job driver never outlives its Ray cluster: once the head's GCS stops answering, the
driver stops its run and, a bounded time later, ends with every child it started."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import time

import psutil

_DRIVER = textwrap.dedent(
    """
    import os, subprocess, sys, threading
    from rlvr.jobs.driver import _watch_cluster

    stopped = threading.Event()
    watch = _watch_cluster(stopped.set)
    child = subprocess.Popen(["sleep", "600"])  # a reward worker, a sandbox...
    print(child.pid, flush=True)
    stopped.wait(60)
    print("stop requested", flush=True)
    threading.Event().wait(60)  # blocked on a dead actor: never returns by itself
    """
)


def test_a_driver_whose_cluster_is_gone_stops_then_exits_with_its_children():
    gcs = socket.socket()
    gcs.bind(("127.0.0.1", 0))
    gcs.listen(16)  # accepting connections: the GCS is there
    env = {
        "RAY_ADDRESS": f"127.0.0.1:{gcs.getsockname()[1]}",  # as Ray sets it for a driver
        "RLVR_DRIVER_LOST_S": "1",
        "RLVR_DRIVER_EXIT_S": "1",
        "PATH": "/usr/bin:/bin",
    }
    driver = subprocess.Popen(
        [sys.executable, "-c", _DRIVER], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        child = psutil.Process(int(driver.stdout.readline()))
        time.sleep(2.5)  # more than RLVR_DRIVER_LOST_S while the GCS answers: still running
        assert driver.poll() is None
        gcs.close()  # the head goes away
        assert driver.wait(timeout=60) == 3
        assert driver.stdout.read().strip() == "stop requested"  # the run was asked to stop
        child.wait(timeout=10)  # its children went with it (raises if still running)
    finally:
        gcs.close()
        if driver.poll() is None:
            driver.kill()
            driver.wait()
