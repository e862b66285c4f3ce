"""The docker backend: option building and stream handling here; engine tests where one answers."""

from __future__ import annotations

import shutil
import struct
import subprocess

import pytest

from sandbox import Limits, docker_available, get_sandbox
from sandbox.docker import _BOOT, _Demux, container_options, exec_command, payload

HAS_ENGINE = docker_available()


def test_container_options_lock_the_container_down():
    opts = container_options("python:3.11-slim", Limits(memory_mb=256, pids=32, disk_mb=16))
    assert opts["network_disabled"] is True and opts["network_mode"] == "none"
    assert opts["read_only"] is True
    assert opts["cap_drop"] == ["ALL"]
    assert "no-new-privileges" in opts["security_opt"]
    assert opts["user"] == "65534:65534"  # not root
    assert set(opts["tmpfs"]) == {"/work", "/tmp"}
    assert "size=16m" in opts["tmpfs"]["/work"]
    # memory = program + the two tmpfs + headroom; no swap on top
    assert opts["mem_limit"] == opts["memswap_limit"] == f"{256 + 2 * 16 + 32}m"
    assert opts["pids_limit"] == 32 + 4
    assert opts["nano_cpus"] == 1_000_000_000
    ulimits = {u["Name"]: (u["Soft"], u["Hard"]) for u in opts["ulimits"]}
    assert ulimits["fsize"] == (16 << 20, 16 << 20) and ulimits["core"] == (0, 0)
    assert opts["command"] == ["sleep", "infinity"] and opts["detach"] is True


def test_exec_command_passes_the_limits_to_the_boot_script():
    cmd = exec_command("python3", Limits(cpu_s=3.4, memory_mb=100, disk_mb=5, open_files=32))
    assert cmd[:5] == ["python3", "-I", "-S", "-c", _BOOT]
    mode, cpu, mem, _nproc, fsize, nofile = cmd[5:]
    assert (mode, cpu, mem, fsize, nofile) == ("docker", "4", str(100 << 20), str(5 << 20), "32")


def _frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(data)) + data


def test_demux_splits_streams_across_arbitrary_chunk_boundaries():
    stream = _frame(1, b"hello ") + _frame(2, b"oops") + _frame(1, b"world")
    d = _Demux(cap=100)
    for i in range(0, len(stream), 3):  # headers and bodies cut mid-way
        d.feed(stream[i : i + 3])
    assert bytes(d.out[1]) == b"hello world" and bytes(d.out[2]) == b"oops"
    assert not d.truncated


def test_demux_caps_each_stream():
    d = _Demux(cap=4)
    d.feed(_frame(1, b"123456") + _frame(2, b"ab"))
    assert bytes(d.out[1]) == b"1234" and d.truncated and bytes(d.out[2]) == b"ab"


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")
def test_boot_script_docker_mode_unpacks_the_payload(tmp_path):
    # The docker-mode boot, for real, in a throwaway bubblewrap root with a tmpfs /work:
    # files and stdin come from the payload on stdin, as `docker exec` delivers them.
    code = "import sys, helper\nprint(helper.X, sys.stdin.read().upper())\n"
    data = payload(code, "from stdin", {"helper.py": "X = 41 + 1\n"})
    cmd = exec_command("/usr/bin/python3", Limits())
    r = subprocess.run(
        ["bwrap", "--ro-bind", "/", "/", "--tmpfs", "/work", "--tmpfs", "/tmp"]
        + ["--dev", "/dev", "--chdir", "/work", "--", *cmd],
        input=data,
        capture_output=True,
        timeout=30,
    )
    assert r.stdout.decode() == "42 FROM STDIN\n", r.stderr.decode()


@pytest.mark.docker
@pytest.mark.skipif(not HAS_ENGINE, reason="no Docker engine answers here")
def test_docker_run_roundtrip():
    with get_sandbox("docker", concurrency=2) as sb:
        r = sb.run_python("print(input()[::-1])", stdin="abc", limits=Limits(wall_s=10))
        assert r.stdout == "cba\n" and r.exit_code == 0


@pytest.mark.docker
@pytest.mark.skipif(not HAS_ENGINE, reason="no Docker engine answers here")
def test_docker_contains_timeouts_network_and_writes():
    with get_sandbox("docker", concurrency=4) as sb:
        slow = sb.run_python("import time\ntime.sleep(60)", limits=Limits(wall_s=2))
        assert slow.timed_out
        net = sb.run_python(
            "import socket\ntry:\n    socket.create_connection(('1.1.1.1', 53), timeout=1)\n"
            "    print('CONNECTED')\nexcept OSError as e:\n    print('blocked')\n",
            limits=Limits(wall_s=5),
        )
        assert net.stdout.strip() == "blocked"
        write = sb.run_python(
            "try:\n    open('/etc/pwned', 'w')\nexcept OSError:\n    print('denied')",
            limits=Limits(wall_s=5),
        )
        assert write.stdout.strip() == "denied"
        bomb = sb.run_python(
            "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
            limits=Limits(wall_s=2, pids=16),
        )
        assert bomb.timed_out
        out = sb.run_python("print('x' * 10**6)", limits=Limits(output_bytes=1000))
        assert out.truncated and len(out.stdout) == 1000
