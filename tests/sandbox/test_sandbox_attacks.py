"""Hostile programs against the real sandbox: the host is unaffected, every run ends within
``wall_s + 1 s`` with the right flags, and no process is left behind.

All attacks of a suite run at the same time (one slot each), which also shows that a run
cannot disturb its neighbours (``kill(-1, 9)`` next to a sleeping run). The suite runs on
both backends: bubblewrap, and Docker (marked ``docker``: the ``docker_engine`` fixture
starts an engine; its containers are warmed for the attacks' limits first, as a service
warms them for its verifier's, so the timings are those of runs, not of container starts).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest

from sandbox import Limits, RunResult
from sandbox.docker import DockerSandbox
from sandbox.local import LocalSandbox

WALL_S = 2.0  # attacks that only the sandbox can stop
SELF_WALL_S = 10.0  # attacks that end on their own (a limit hit, an error): just a bound


@dataclass
class Attack:
    code: str
    limits: Limits = field(default_factory=lambda: Limits(wall_s=SELF_WALL_S, cpu_s=SELF_WALL_S))


def _host_ips() -> list[str]:
    ips = {"127.0.0.1"}
    with contextlib.suppress(OSError):
        ips.update(
            ai[4][0] for ai in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
        )
    return sorted(ips)


def attacks(port: int, secret_path: str, outside_path: str, env_secret: str) -> dict[str, Attack]:
    ips = _host_ips()
    return {
        "fork_bomb": Attack(
            "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
            Limits(wall_s=WALL_S, cpu_s=WALL_S, pids=16),
        ),
        "thread_bomb": Attack(
            "import os, threading, time\nn = 0\ntry:\n    while True:\n"
            "        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
            "        n += 1\nexcept (RuntimeError, MemoryError):\n"
            "    print('threads', n, flush=True)\n    os._exit(0)\n",
            Limits(wall_s=SELF_WALL_S, cpu_s=SELF_WALL_S, pids=16),
        ),
        "memory_bomb": Attack(
            "x = []\nwhile True:\n    x.append(bytearray(16 << 20))\n",
            Limits(wall_s=SELF_WALL_S, cpu_s=SELF_WALL_S, memory_mb=256),
        ),
        "infinite_loop": Attack("while True:\n    pass\n", Limits(wall_s=WALL_S, cpu_s=1)),
        "long_sleep": Attack("import time\ntime.sleep(60)\n", Limits(wall_s=WALL_S)),
        "huge_output": Attack(
            "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n",
            Limits(wall_s=WALL_S, cpu_s=WALL_S, output_bytes=100_000),
        ),
        "disk_filler": Attack(
            "import os\nchunk = b'x' * (1 << 20)\n"
            "for path in ['/work/fill', '/tmp/fill', '/dev/shm/fill', '/fill', '/usr/fill']:\n"
            "    n = 0\n    try:\n        with open(path, 'wb') as f:\n"
            "            while True:\n                f.write(chunk); f.flush(); n += 1\n"
            "    except OSError as e:\n        print(path, n, e.errno, flush=True)\n",
            Limits(wall_s=SELF_WALL_S, cpu_s=SELF_WALL_S, disk_mb=8),
        ),
        "tcp_to_host": Attack(
            "import socket\n"
            f"for host in {ips!r}:\n"
            "    try:\n"
            f"        socket.create_connection((host, {port}), timeout=0.5)\n"
            "        print('CONNECTED', host)\n"
            "    except OSError as e:\n        print('blocked', host, e.errno)\n"
        ),
        "read_secret_file": Attack(
            "import os\n"
            f"for p in [{secret_path!r}, '/proc/1/root' + {secret_path!r}, '/etc/shadow']:\n"
            "    try:\n        print(open(p).read())\n"
            "    except OSError as e:\n        print('denied', p, e.errno)\n"
            "print(sorted(os.listdir('/')), sorted(os.listdir('/tmp')))\n"
        ),
        "write_outside_workdir": Attack(
            f"for p in [{outside_path!r}, '/pwned', '/usr/pwned', '/etc/pwned', '/dev/pwned']:\n"
            "    try:\n        open(p, 'w').write('pwned'); print('WROTE', p)\n"
            "    except OSError as e:\n        print('denied', p, e.errno)\n"
        ),
        "read_host_env": Attack(
            "import os\nprint(dict(os.environ))\n"
            "for p in ['/proc/self/environ', '/proc/1/environ']:\n"
            "    try:\n        print(open(p, 'rb').read())\n"
            "    except OSError as e:\n        print('denied', p, e.errno)\n"
        ),
        "kill_everything": Attack(
            "import os, signal\n"
            "try:\n    os.kill(-1, signal.SIGKILL)\nexcept OSError as e:\n    print('kill -1', e.errno)\n"
            # No parent in sight (pid 0: outside the namespace) is the defence; kill(0, ...)
            # would only hit the program's own process group.
            "try:\n    os.getppid() and os.kill(os.getppid(), signal.SIGKILL)\n"
            "except OSError as e:\n    print('kill parent', e.errno)\n"
            "print('survived', os.getpid(), os.getppid(), flush=True)\n"
        ),
        "daemon_grandchild": Attack(
            "import os, time\n"
            "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            "        for fd in (0, 1, 2):\n            os.close(fd)\n"
            "        time.sleep(60)\n        os._exit(0)\n    os._exit(0)\n"
            "print('parent exits', flush=True)\n"
        ),
    }


@dataclass
class Outcome:
    result: RunResult
    elapsed_s: float


class _Host:
    """What the attacks aim at: a TCP server, a secret file, a path outside, an env var."""

    def __init__(self, tmp: str, env_secret: str) -> None:
        self.server = socket.socket()
        self.server.bind(("0.0.0.0", 0))
        self.server.listen(8)
        self.server.setblocking(False)
        self.port = self.server.getsockname()[1]
        self.secret = secrets.token_hex(16)
        self.secret_path = os.path.join(tmp, "secret.txt")
        with open(self.secret_path, "w") as f:
            f.write(self.secret)
        os.chmod(tmp, 0o777)  # only isolation, not permissions, may keep the sandbox out
        os.chmod(self.secret_path, 0o644)
        self.outside_path = os.path.join(tmp, "pwned.txt")
        self.env_secret = env_secret

    def accepted_connections(self) -> int:
        n = 0
        while True:
            try:
                conn, _ = self.server.accept()
            except BlockingIOError:
                return n
            conn.close()
            n += 1


def _run_suite(sb, suite: dict[str, Attack]) -> dict[str, Outcome]:
    def one(attack: Attack) -> Outcome:
        t0 = time.monotonic()
        result = sb.run_python(attack.code, limits=attack.limits)
        return Outcome(result, time.monotonic() - t0)

    with ThreadPoolExecutor(len(suite)) as pool:
        futures = {name: pool.submit(one, a) for name, a in suite.items()}
        return {name: f.result() for name, f in futures.items()}


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    env_secret = secrets.token_hex(16)
    os.environ["RLVR_TEST_HOST_SECRET"] = env_secret
    h = _Host(str(tmp_path_factory.mktemp("attack-host")), env_secret)
    yield h
    h.server.close()
    os.environ.pop("RLVR_TEST_HOST_SECRET", None)


@pytest.fixture(scope="module", params=["local", pytest.param("docker", marks=pytest.mark.docker)])
def full_sandbox(request, uid_base):
    if request.param == "local":
        with LocalSandbox(concurrency=16, uid_base=uid_base()) as sb:
            yield sb
        return
    engine = request.getfixturevalue("docker_engine")
    client = engine.client()
    with DockerSandbox(image=engine.base_image, concurrency=len(ALL), client=client) as sb:
        yield sb
    client.close()


def _warm_for(sb, suite: dict[str, Attack]) -> None:
    """Docker: start the containers of the suite's limits now (one per attack)."""
    if isinstance(sb, DockerSandbox):
        profiles = Counter(DockerSandbox._profile(a.limits) for a in suite.values())
        for attack in suite.values():
            sb.warm(attack.limits, profiles[DockerSandbox._profile(attack.limits)])


@pytest.fixture(scope="module")
def suite_results(full_sandbox, host):
    suite = attacks(host.port, host.secret_path, host.outside_path, host.env_secret)
    _warm_for(full_sandbox, suite)
    # Host processes running as the sandbox's own uids: if a run could reach the host's
    # pid namespace, kill(-1, 9) (same uid) would kill the one of its slot.
    sentinels = [
        subprocess.Popen(
            ["setpriv", f"--reuid={uid}", "--regid=65534", "--clear-groups", "sleep", "30"]
        )
        for uid in full_sandbox.uids
    ]
    try:
        results = _run_suite(full_sandbox, suite)
        sentinels_alive = all(s.poll() is None for s in sentinels)
    finally:
        for s in sentinels:
            s.kill()
            s.wait()
    return results, sentinels_alive


ALL = [
    "fork_bomb",
    "thread_bomb",
    "memory_bomb",
    "infinite_loop",
    "long_sleep",
    "huge_output",
    "disk_filler",
    "tcp_to_host",
    "read_secret_file",
    "write_outside_workdir",
    "read_host_env",
    "kill_everything",
    "daemon_grandchild",
]


@pytest.mark.parametrize("name", ALL)
def test_attack_ends_within_wall_time_plus_one_second(suite_results, name):
    results, _ = suite_results
    out = results[name]
    wall_s = attacks(0, "", "", "")[name].limits.wall_s
    assert out.elapsed_s < wall_s + 1.0, (name, out.elapsed_s, out.result)


def test_no_process_outlives_the_attacks(suite_results, full_sandbox, procs_of):
    # The fixture has returned: every run_python call is over (and the sentinels are reaped).
    if isinstance(full_sandbox, DockerSandbox):
        # Every container left (idle, back in the pool) runs its `sleep` and nothing else;
        # those of killed runs were killed whole.
        for container in full_sandbox.containers():
            processes = container.top(ps_args="-eo pid,args")["Processes"]
            assert [p[-1] for p in processes] == ["sleep infinity"], processes
        return
    assert procs_of(full_sandbox.uids) == []
    for slot in list(full_sandbox._free.queue):
        if slot.cgroup is not None:
            assert slot.cgroup.pids() == []


def test_fork_bomb_is_contained_and_times_out(suite_results):
    r = suite_results[0]["fork_bomb"].result
    assert r.timed_out and r.exit_code == -9


def test_thread_bomb_stops_at_the_pids_limit(suite_results):
    r = suite_results[0]["thread_bomb"].result
    assert r.exit_code == 0 and not r.timed_out, r
    n = int(r.stdout.split()[1])
    assert 0 < n < 16


def test_memory_bomb_hits_the_memory_limit(suite_results):
    r = suite_results[0]["memory_bomb"].result
    assert r.oom and not r.timed_out and r.exit_code != 0, r


def test_infinite_loop_is_stopped(suite_results):
    out = suite_results[0]["infinite_loop"]
    assert out.result.timed_out and out.result.exit_code != 0


def test_cpu_limit_alone_stops_a_busy_loop(full_sandbox):
    # A wall clock far away: only RLIMIT_CPU (SIGKILL at 1 s of CPU) can end this run.
    r = full_sandbox.run_python("while True:\n    pass\n", limits=Limits(wall_s=30, cpu_s=1))
    # Docker: SIGXCPU at the limit (the program is not its namespace's pid 1; see _boot.py).
    signum = signal.SIGXCPU if isinstance(full_sandbox, DockerSandbox) else signal.SIGKILL
    assert r.timed_out and r.exit_code == 128 + signum, r


def test_long_sleep_is_killed_at_the_wall_clock(suite_results):
    out = suite_results[0]["long_sleep"]
    assert out.result.timed_out and out.result.exit_code == -9
    assert out.elapsed_s >= WALL_S


def test_huge_output_is_truncated_at_the_cap(suite_results):
    r = suite_results[0]["huge_output"].result
    assert r.truncated and not r.timed_out
    assert len(r.stdout) == 100_000


def test_disk_filler_is_capped_by_the_work_dir_size(suite_results):
    r = suite_results[0]["disk_filler"].result
    lines = dict((ln.split()[0], ln.split()[1:]) for ln in r.stdout.splitlines())
    for path in ("/work/fill", "/tmp/fill", "/dev/shm/fill"):
        mb_written, errno_ = int(lines[path][0]), int(lines[path][1])
        assert mb_written <= 8 and errno_ in (27, 28), (path, lines)  # EFBIG / ENOSPC
    for path in ("/fill", "/usr/fill"):
        assert lines[path] == ["0", "30"]  # EROFS: nothing written


def test_no_tcp_connection_reaches_the_host(suite_results, host):
    r = suite_results[0]["tcp_to_host"].result
    assert "CONNECTED" not in r.stdout and r.stdout.count("blocked") >= 1, r
    assert host.accepted_connections() == 0


def test_host_files_are_invisible(suite_results, host):
    r = suite_results[0]["read_secret_file"].result
    assert host.secret not in r.stdout + r.stderr
    assert r.stdout.count("denied") == 3, r.stdout


def test_nothing_is_written_outside_the_work_dir(suite_results, host):
    r = suite_results[0]["write_outside_workdir"].result
    assert "WROTE" not in r.stdout and r.stdout.count("denied") == 5, r.stdout
    assert not os.path.exists(host.outside_path)


def test_host_environment_is_not_visible(suite_results, host):
    r = suite_results[0]["read_host_env"].result
    assert r.exit_code == 0, r
    assert host.env_secret not in r.stdout + r.stderr
    assert "RLVR_TEST_HOST_SECRET" not in r.stdout


def test_kill_minus_one_reaches_only_the_sandbox(suite_results):
    results, sentinels_alive = suite_results
    r = results["kill_everything"].result
    assert "survived" in r.stdout and r.exit_code == 0, r
    assert sentinels_alive  # host processes of the same uids
    # The run sleeping next to it was ended by the wall clock, not by kill(-1).
    assert results["long_sleep"].result.timed_out


def test_daemonised_grandchild_does_not_delay_or_outlive_the_run(suite_results):
    out = suite_results[0]["daemon_grandchild"]
    assert out.result.exit_code == 0 and not out.result.timed_out
    assert "parent exits" in out.result.stdout
    # Returned when the program exited, not at its 10 s deadline (where waiting for the
    # grandchild would end); half of it leaves room for a loaded machine's docker exec.
    assert out.elapsed_s < SELF_WALL_S / 2, out


# Without cgroups (a machine whose cgroup tree is not writable) and without seccomp: the
# namespaces and rlimits alone must still contain the attacks that rely on them.
DEGRADED = [
    "fork_bomb",
    "memory_bomb",
    "long_sleep",
    "tcp_to_host",
    "kill_everything",
    "daemon_grandchild",
]


@pytest.fixture(scope="module")
def degraded_results(host, uid_base, procs_of):
    with LocalSandbox(
        concurrency=len(DEGRADED), uid_base=uid_base(), cgroups=False, seccomp=False
    ) as sb:
        assert sb.isolation["seccomp"] is False and sb.isolation["cgroups"].startswith("off")
        suite = attacks(host.port, host.secret_path, host.outside_path, host.env_secret)
        results = _run_suite(sb, {n: suite[n] for n in DEGRADED})
        left = procs_of(sb.uids)
    return results, left


def test_rlimits_and_namespaces_alone_contain_the_attacks(degraded_results, host):
    results, left = degraded_results
    assert left == []
    suite = attacks(0, "", "", "")
    for name, out in results.items():
        assert out.elapsed_s < suite[name].limits.wall_s + 1.0, (name, out)
    assert results["fork_bomb"].result.timed_out
    assert results["memory_bomb"].result.oom
    assert results["long_sleep"].result.timed_out
    assert "survived" in results["kill_everything"].result.stdout
    assert results["daemon_grandchild"].result.exit_code == 0
    # No seccomp: the empty network namespace alone refuses the connection.
    assert "CONNECTED" not in results["tcp_to_host"].result.stdout
    assert host.accepted_connections() == 0
