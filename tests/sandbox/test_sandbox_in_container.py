"""The local (bubblewrap) sandbox inside a Docker container configured as the deployments
configure theirs (``seccomp=unconfined``, ``apparmor=unconfined``, a non-root user; no
privileges): it starts, runs programs, and a program in it cannot make a user namespace.

In a container ``/proc/sys`` is read-only and the kernel refuses a private procfs, so
bubblewrap cannot apply ``--disable-userns``; the sandbox then relies on its seccomp filter
for that and says so in ``isolation``. The container gets this checkout's ``sandbox``
package, the host's bubblewrap and ``pyseccomp`` (read-only mounts) on the Debian base
image of the ``docker_engine`` fixture (bookworm, like the API image).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pyseccomp
import pytest

REPO = Path(__file__).resolve().parents[2]

PROBE = r"""
import json, sys
from sandbox import Limits
from sandbox.local import LocalSandbox
with LocalSandbox(concurrency=2) as sb:
    ok = sb.run_python("print(6 * 7)", limits=Limits(wall_s=10))
    userns = sb.run_python(
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"  # os.unshare: 3.12+
        "print('NEW USERNS' if libc.unshare(0x10000000) == 0 else "
        "f'refused {ctypes.get_errno()}')\n",
        limits=Limits(wall_s=10),
    )
    bomb = sb.run_python(
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
        limits=Limits(wall_s=2, cpu_s=2, pids=16),
    )
    print(json.dumps({"isolation": sb.isolation, "ok": ok.stdout, "userns": userns.stdout,
                      "bomb_timed_out": bomb.timed_out}))
"""


@pytest.mark.docker
def test_local_sandbox_runs_in_a_container_as_deployed(docker_engine):
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        pytest.skip("needs bubblewrap on the host (mounted into the container)")
    mounts = {
        bwrap: "/usr/local/bin/bwrap",
        str(REPO / "sandbox"): "/opt/rlvr/sandbox",
        pyseccomp.__file__: "/opt/rlvr/pyseccomp.py",
    }
    cmd = ["docker", "run", "--rm", "--network", "none", "--user", "10001:10001"]
    cmd += ["--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined"]
    cmd += ["--env", "PYTHONPATH=/opt/rlvr", "--env", "PYTHONDONTWRITEBYTECODE=1"]
    for src, dst in mounts.items():
        cmd += ["--volume", f"{src}:{dst}:ro"]
    cmd += [docker_engine.base_image, "python3", "-c", PROBE]
    r = subprocess.run(cmd, env=docker_engine.env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["ok"] == "42\n", out
    assert out["userns"] == "refused 1\n", out  # EPERM from the seccomp filter
    assert out["bomb_timed_out"], out
    assert out["isolation"]["seccomp"] is True, out
    assert out["isolation"]["nested_userns"] == "refused by seccomp (read-only /proc/sys)", out
    assert out["isolation"]["proc"].startswith("none"), out  # never the host's /proc
