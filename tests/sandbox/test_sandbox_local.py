"""The local (bubblewrap) backend: what a program sees, what comes back, bad input."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import sandbox
from sandbox import Limits, RunSpec, SandboxError, SandboxUnavailable, get_sandbox
from sandbox.local import LocalSandbox


def test_stdin_stdout_stderr_and_exit_code(local_sb):
    r = local_sb.run_python(
        "import sys\nline = input()\nprint(line[::-1])\nprint('warn', file=sys.stderr)\nsys.exit(3)",
        stdin="abc\n",
    )
    assert (r.stdout, r.stderr, r.exit_code) == ("cba\n", "warn\n", 3)
    assert not (r.timed_out or r.oom or r.truncated) and r.duration_s > 0


def test_files_are_placed_in_the_work_dir_and_importable(local_sb):
    r = local_sb.run_python(
        "import os, helper\nprint(helper.answer(), open('data/in.txt').read(), os.getcwd())",
        files={"helper.py": "def answer():\n    return 42\n", "data/in.txt": "payload"},
    )
    assert r.stdout == "42 payload /work\n", r.stderr


def test_program_runs_as_main_with_site_builtins(local_sb):
    r = local_sb.run_python("print(__name__, __file__)\nexit(5)")
    assert r.stdout == "__main__ /work/main.py\n" and r.exit_code == 5


def test_program_is_unprivileged_and_filtered(local_sb):
    r = local_sb.run_python(
        "import os\nst = dict(l.split(':\\t', 1) for l in open('/proc/self/status') if ':\\t' in l)\n"
        "print(os.getuid(), st['CapEff'].strip(), st['Seccomp'].strip(), st['NoNewPrivs'].strip())"
    )
    uid, cap_eff, seccomp_mode, no_new_privs = r.stdout.split()
    if os.geteuid() == 0:
        assert int(uid) in local_sb.uids
    assert int(cap_eff, 16) == 0
    assert seccomp_mode == ("2" if local_sb.isolation["seccomp"] else "0")
    assert no_new_privs == "1"


def test_environment_is_cleared(local_sb):
    r = local_sb.run_python("import os\nprint(sorted(os.environ))")
    assert r.stdout.strip() == "['HOME', 'LANG', 'PATH', 'PWD']"  # PWD: bubblewrap's --chdir


def test_signal_death_is_reported_shell_style(local_sb):
    r = local_sb.run_python("import ctypes\nctypes.string_at(0)")  # SIGSEGV
    assert r.exit_code == 128 + signal.SIGSEGV and not r.timed_out


def test_child_killed_by_a_signal_is_seen_by_the_program(local_sb):
    # The program is pid 1 of its namespace; its children get ordinary signal semantics.
    r = local_sb.run_python(
        "import subprocess, sys\n"
        "kill_self = 'import os, signal; os.kill(os.getpid(), signal.SIGTERM)'\n"
        "print(subprocess.run([sys.executable, '-c', kill_self]).returncode)"
    )
    assert r.stdout.strip() == str(-signal.SIGTERM), r


def test_invalid_utf8_output_is_replaced_not_fatal(local_sb):
    r = local_sb.run_python("import sys\nsys.stdout.buffer.write(b'ok \\xff\\xfe')")
    assert r.stdout == "ok \ufffd\ufffd"


def test_unread_large_stdin_does_not_block(local_sb):
    r = local_sb.run_python("print('ignored my stdin')", stdin="x" * 5_000_000)
    assert r.stdout == "ignored my stdin\n" and not r.timed_out


def test_only_three_devices_exist_and_dev_and_etc_are_read_only(local_sb):
    r = local_sb.run_python(
        "import os, sys\nprint(sorted(os.listdir('/dev')))\n"
        "print(os.readlink('/dev/stdout'), len(open('/dev/urandom', 'rb').read(8)),\n"
        "      open('/dev/zero', 'rb').read(2), os.path.getsize('/etc/ld.so.cache') > 0)\n"
        "for path, mode in (('/dev/evil', 'w'), ('/etc/ld.so.cache', 'a')):\n"
        "    try:\n        open(path, mode)\n    except OSError as e:\n        print(e.errno)\n"
    )
    lines = r.stdout.splitlines()
    assert lines[0] == str(["fd", "null", "shm", "stderr", "stdin", "stdout", "urandom", "zero"]), (
        r.stderr
    )
    assert lines[1] == "/proc/self/fd/1 8 b'\\x00\\x00' True"
    assert lines[2:] == ["30", "30"]  # EROFS: /dev and the copied system files are read-only


def test_syntax_error_is_a_failed_run_not_an_exception(local_sb):
    r = local_sb.run_python("def f(:\n")
    assert r.exit_code == 1 and "SyntaxError" in r.stderr


def test_memory_limit_holds_across_processes(local_sb):
    if not local_sb.isolation["cgroups"].startswith("cgroup"):
        pytest.skip(f"cgroups unavailable here: {local_sb.isolation['cgroups']}")
    # Each child stays under its own RLIMIT_AS (200 MB) but together they exceed the run's
    # cgroup limit (200 + 3 x 8 MB of tmpfs + headroom): the kernel OOM-kills inside the slot.
    code = (
        "import os\nkids = []\nfor _ in range(3):\n    pid = os.fork()\n    if pid == 0:\n"
        "        x = bytearray(150 << 20)\n        for i in range(0, len(x), 4096):\n"
        "            x[i] = 1\n        import time; time.sleep(1)\n        os._exit(0)\n"
        "    kids.append(pid)\n"
        "print([os.waitstatus_to_exitcode(os.waitpid(k, 0)[1]) for k in kids])\n"
    )
    r = local_sb.run_python(code, limits=Limits(wall_s=15, memory_mb=200, disk_mb=8))
    assert r.oom, r
    assert "-9" in r.stdout  # a child was SIGKILLed by the OOM killer, the program lived on


def test_run_many_keeps_order_and_bounds_concurrency(uid_base):
    with LocalSandbox(concurrency=2, uid_base=uid_base()) as sb:
        seen: list[int] = []
        stop = threading.Event()

        def watch() -> None:  # how many sandboxes (outer bubblewrap processes) exist at once
            while not stop.is_set():
                seen.append(sum(1 for e in os.scandir("/proc") if _is_our_bwrap(e.name)))
                time.sleep(0.01)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            specs = [RunSpec(f"import time\ntime.sleep(0.2)\nprint({i})") for i in range(6)]
            results = sb.run_many(specs)
        finally:
            stop.set()
            watcher.join()
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(6)]
    assert 1 <= max(seen) <= 2


def _is_our_bwrap(pid: str) -> bool:
    """Whether ``pid`` is a bubblewrap started by this test process (one per run)."""
    if not pid.isdigit():
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            comm, _, rest = f.read().rpartition(")")
    except OSError:
        return False
    return comm.endswith("(bwrap") and int(rest.split()[1]) == os.getpid()


def test_run_python_from_many_threads_waits_for_slots(uid_base):
    with LocalSandbox(concurrency=2, uid_base=uid_base()) as sb:
        out: dict[int, str] = {}

        def one(i: int) -> None:
            out[i] = sb.run_python(f"print({i} * 2)").stdout

        threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert out == {i: f"{i * 2}\n" for i in range(8)}


def test_close_removes_the_slot_cgroups_and_refuses_runs(uid_base):
    sb = LocalSandbox(concurrency=2, uid_base=uid_base())
    dirs = [d for s in list(sb._free.queue) if s.cgroup for d in s.cgroup.dirs.values()]
    assert sb.run_python("print(1)").stdout == "1\n"
    sb.close()
    assert all(not os.path.exists(d) for d in dirs)
    with pytest.raises(SandboxError, match="closed"):
        sb.run_python("print(1)")


def test_a_closed_shared_sandbox_is_replaced():
    sb = get_sandbox("local")
    sb.close()
    again = get_sandbox("local")
    assert again is not sb and again.run_python("print(2)").stdout == "2\n"


# ------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"code": b"print(1)"}, TypeError, "code must be a str"),
        ({"code": None}, TypeError, "code must be a str"),
        ({"stdin": 5}, TypeError, "stdin must be a str"),
        ({"limits": {"wall_s": 1}}, TypeError, "limits must be a sandbox.Limits"),
        ({"files": ["a.py"]}, TypeError, "files must be a dict"),
        ({"files": {"/etc/x": "1"}}, ValueError, "relative to the work dir"),
        ({"files": {"../x": "1"}}, ValueError, "relative to the work dir"),
        ({"files": {"main.py": "1"}}, ValueError, "reserved for the code"),
        ({"files": {"a.py": 1}}, TypeError, "must be str or bytes"),
    ],
)
def test_bad_run_arguments_name_the_argument(local_sb, kwargs, error, words):
    args = {"code": "print(1)", **kwargs}
    with pytest.raises(error, match=words):
        local_sb.run_python(**args)


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("wall_s", -1, ValueError),
        ("cpu_s", 0, ValueError),
        ("memory_mb", float("inf"), ValueError),
        ("pids", "64", TypeError),
        ("output_bytes", True, TypeError),
        ("disk_mb", float("nan"), ValueError),
    ],
)
def test_bad_limits_name_the_field_and_the_fix(field, value, error):
    with pytest.raises(error, match=f"Limits.{field}"):
        Limits(**{field: value})


def test_run_many_rejects_non_specs(local_sb):
    with pytest.raises(TypeError, match="item 1 must be a sandbox.RunSpec"):
        local_sb.run_many([RunSpec("print(1)"), "print(2)"])


def test_unknown_backend_lists_the_choices():
    with pytest.raises(ValueError, match="auto, local, docker"):
        get_sandbox("firecracker")


def test_auto_picks_local_without_an_engine_and_is_shared():
    if sandbox.docker_available():
        pytest.skip("a Docker engine answers here: auto picks docker")
    sb = get_sandbox("auto")
    assert sb.backend == "local" and get_sandbox("local") is sb


def test_bad_concurrency_is_refused():
    with pytest.raises(ValueError, match="concurrency must be an int >= 1"):
        LocalSandbox(concurrency=0)


def test_private_interpreter_is_refused_with_the_fix(tmp_path):
    private = tmp_path / "home"
    private.mkdir(mode=0o700)
    python = private / "python3"
    shutil.copy2("/usr/bin/python3", python)
    with pytest.raises(SandboxUnavailable, match="not executable by unprivileged uids"):
        LocalSandbox(python=str(python))


def test_missing_bubblewrap_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
        LocalSandbox()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root")
def test_masked_proc_falls_back_to_no_proc(tmp_path, uid_base):
    # Docker masks parts of /proc; the kernel then refuses a fresh procfs in a user namespace.
    # Reproduce that with an over-mounted /proc file, as a container engine does.
    script = tmp_path / "masked.py"
    script.write_text(
        "from sandbox.local import LocalSandbox\n"
        f"sb = LocalSandbox(concurrency=1, uid_base={uid_base()})\n"
        "print(sb.isolation['proc'])\n"
        "print(sb.run_python(\"import os; print(os.path.exists('/proc/self'))\").stdout.strip())\n"
        "sb.close()\n"
    )
    r = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            f'mount --bind /dev/null /proc/version && exec "{sys.executable}" "{script}"',
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[2],
    )
    assert r.stdout.splitlines() == ["none (masked /proc; see docs/sandbox.md)", "False"], r.stderr
