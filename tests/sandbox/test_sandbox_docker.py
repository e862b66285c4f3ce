"""The docker backend: option building and stream handling without an engine; runs against
a real one (the ``docker_engine`` fixture starts it). The attacks are in
test_sandbox_attacks.py, for both backends."""

from __future__ import annotations

import shutil
import struct
import subprocess

import pytest

from sandbox import Limits, SandboxUnavailable, get_sandbox
from sandbox.docker import _BOOT, DockerSandbox, _Demux, container_options, exec_command, payload
from verifiers import get_verifier
from verifiers.options import OptionsError


def test_container_options_lock_the_container_down():
    opts = container_options("python:3.11-slim", Limits(memory_mb=256, pids=32, disk_mb=16))
    assert opts["network_disabled"] is True and opts["network_mode"] == "none"
    assert opts["read_only"] is True
    assert opts["cap_drop"] == ["ALL"]
    assert "no-new-privileges" in opts["security_opt"]
    assert opts["user"] == "65534:65534"  # not root
    assert set(opts["tmpfs"]) == {"/work", "/tmp"}
    assert "size=16m" in opts["tmpfs"]["/work"]
    # memory = program + the three tmpfs (/work, /tmp, /dev/shm) + headroom; no swap on top
    assert opts["mem_limit"] == opts["memswap_limit"] == f"{256 + 3 * 16 + 32}m"
    assert opts["pids_limit"] == 32 + 1
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


@pytest.fixture(scope="module")
def docker_sb(docker_engine):
    client = docker_engine.client()
    with DockerSandbox(image=docker_engine.base_image, concurrency=2, client=client) as sb:
        yield sb
    client.close()


@pytest.mark.docker
def test_docker_run_roundtrip(docker_sb):
    r = docker_sb.run_python("print(input()[::-1])", stdin="abc", limits=Limits(wall_s=10))
    assert r.stdout == "cba\n" and r.exit_code == 0 and r.ok


@pytest.mark.docker
def test_docker_runs_files_and_reuses_a_clean_container(docker_sb):
    # A file the program writes is gone in the next run in the same (warm) container.
    code = "import helper\nprint(helper.X)\nopen('junk', 'w')\nopen('/tmp/junk', 'w')\n"
    first = docker_sb.run_python(code, files={"helper.py": "X = 7\n"}, limits=Limits(wall_s=10))
    assert first.stdout == "7\n", first
    ids_before = {c.id for c in docker_sb.containers()}
    again = docker_sb.run_python("import os\nprint(os.listdir('.'), os.listdir('/tmp'))")
    assert again.stdout == "['main.py'] []\n", again
    assert {c.id for c in docker_sb.containers()} == ids_before  # reused, not replaced


@pytest.mark.docker
def test_docker_nonzero_exit_and_signal_codes(docker_sb):
    assert docker_sb.run_python("raise SystemExit(3)").exit_code == 3
    killed = docker_sb.run_python("import os, signal\nos.kill(os.getpid(), signal.SIGTERM)")
    assert killed.exit_code == 128 + 15 and not killed.timed_out


@pytest.mark.docker
def test_docker_image_is_a_setting(docker_engine, monkeypatch):
    client = docker_engine.client()
    monkeypatch.setenv("RLVR_SANDBOX_IMAGE", "rlvr-no-such-image:0")
    with pytest.raises(SandboxUnavailable, match="rlvr-no-such-image:0.*RLVR_SANDBOX_IMAGE"):
        DockerSandbox(client=client)
    monkeypatch.setenv("RLVR_SANDBOX_IMAGE", docker_engine.base_image)
    with DockerSandbox(client=client, concurrency=1) as sb:
        assert sb.image == docker_engine.base_image
    client.close()


@pytest.mark.docker
def test_auto_picks_docker_only_where_the_image_is_present(docker_engine, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", docker_engine.host)
    monkeypatch.setenv("RLVR_SANDBOX_IMAGE", "rlvr-no-such-image:0")
    assert get_sandbox("auto").backend == "local"  # an engine, but it would have to pull
    monkeypatch.setenv("RLVR_SANDBOX_IMAGE", docker_engine.base_image)
    sb = get_sandbox("auto")
    try:
        assert sb.backend == "docker" and sb.image == docker_engine.base_image
        assert get_sandbox("docker", image=docker_engine.base_image) is sb  # shared
        assert sb.run_python("print(6 * 7)").stdout == "42\n"
    finally:
        sb.close()


@pytest.mark.docker
def test_code_verifier_runs_in_the_image_its_options_name(docker_engine, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", docker_engine.host)
    monkeypatch.delenv("RLVR_SANDBOX_IMAGE", raising=False)
    verifier = get_verifier("code", backend="docker", image=docker_engine.base_image)
    try:
        completion = "<think>x</think>\n```python\nimport sys\nprint(sys.executable)\n```"
        verdict = verifier.verify(
            completion, {"tests": [{"stdin": "", "stdout": "/usr/bin/python3\n"}]}
        )
        assert verdict.score == 1.0, verdict  # Debian's python3: the base image, not python:*-slim
        assert verifier.sandbox.backend == "docker"
    finally:
        verifier.sandbox.close()
    with pytest.raises(OptionsError, match="image"):
        get_verifier("code", backend="docker", image="no spaces allowed")


@pytest.mark.docker
def test_service_refuses_a_docker_image_the_engine_lacks(docker_engine, monkeypatch):
    from rlvr.api.validation import verifier_option_problems

    monkeypatch.setenv("DOCKER_HOST", docker_engine.host)
    # both allowed; the first is not on the engine
    monkeypatch.setenv("RLVR_SANDBOX_IMAGES", f"rlvr-none:0,{docker_engine.base_image}")
    missing = verifier_option_problems("code", {"backend": "docker", "image": "rlvr-none:0"})
    assert missing == [(("image",), "image 'rlvr-none:0' is not present on the Docker engine")]
    present = {"backend": "docker", "image": docker_engine.base_image}
    assert verifier_option_problems("code", present) == []
