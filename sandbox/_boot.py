"""The first Python code that runs inside a sandbox, before the untrusted program.

Passed as ``python3 -I -S -c <this file's text> MODE CPU_S AS_BYTES NPROC FSIZE NOFILE``.
It sets the per-process rlimits (which the program can then only lower), restores
``exit()``/``quit()`` (``-S`` skips ``site``, which defines them), and runs
``/work/main.py`` as ``__main__``. MODE ``docker`` first unpacks the program, its files and
its stdin from a ``marshal``-encoded payload on stdin (``docker exec`` has no other way in).

Only builtin modules are imported: this runs on every execution and its cost is latency.
"""

import sys


def _boot():
    import _sitebuiltins
    import builtins
    import resource

    mode = sys.argv[1]
    cpu_s, as_bytes, nproc, fsize, nofile = (int(a) for a in sys.argv[2:7])
    if mode == "docker":
        import marshal
        import os

        payload = marshal.loads(sys.stdin.buffer.read())
        for name, content in payload["files"].items():
            path = os.path.join("/work", name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(content)
        # The program's stdin: an unlinked file, so a program that never reads it cannot block us.
        with open("/tmp/.stdin", "wb") as f:
            f.write(payload["stdin"])
        fd = os.open("/tmp/.stdin", os.O_RDONLY)
        os.unlink("/tmp/.stdin")
        os.dup2(fd, 0)
        os.close(fd)
        sys.stdin = open(0, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
    for which, soft, hard in (
        # Locally: SIGKILL at the limit (the program is pid 1 of its namespace and would
        # ignore the SIGXCPU a lower soft limit sends). In docker the program is not pid 1:
        # SIGXCPU at the limit (exit 152 says "CPU limit" unambiguously), SIGKILL a second on.
        (resource.RLIMIT_CPU, cpu_s, cpu_s + (mode == "docker")),
        (resource.RLIMIT_AS, as_bytes, as_bytes),
        (resource.RLIMIT_NPROC, nproc, nproc),
        (resource.RLIMIT_FSIZE, fsize, fsize),
        (resource.RLIMIT_NOFILE, nofile, nofile),
        (resource.RLIMIT_CORE, 0, 0),
    ):
        ceiling = resource.getrlimit(which)[1]  # an inherited hard limit can only go down
        if ceiling != resource.RLIM_INFINITY:
            soft, hard = min(soft, ceiling), min(hard, ceiling)
        resource.setrlimit(which, (soft, hard))
    builtins.exit = _sitebuiltins.Quitter("exit", "Ctrl-D (i.e. EOF)")
    builtins.quit = _sitebuiltins.Quitter("quit", "Ctrl-D (i.e. EOF)")
    sys.argv = ["/work/main.py"]
    sys.path.insert(0, "/work")
    globals()["__file__"] = "/work/main.py"
    with open("/work/main.py", "rb") as f:
        return compile(f.read(), "/work/main.py", "exec")


exec(_boot())
