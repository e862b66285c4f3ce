"""A Docker engine and a Debian base image on a machine without registry access.

Machines that have the Docker client but no engine (CI, this project's test VMs) can run one:
``dockerd --bridge=none --iptables=false --ip-masq=false`` needs root and nothing else, and
gives containers no bridge network (sandbox containers use ``network_mode: none``; a local
stack uses host networking on loopback ports). Images come from Debian packages instead of
a registry: ``debootstrap --variant=minbase`` into a directory, then ``docker import``.

    python3 deploy/engine.py up            # start dockerd if none answers, build the base image
    python3 deploy/engine.py base-image    # print the base image's tag (built if missing)

The base image's tag carries a hash of its recipe (suite, mirror, packages, this file's
recipe version), so a changed recipe builds a new image and an unchanged one is built once
per engine data root. Standard library only: runs before the project is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SUITE = "bookworm"
# python3 for the sandbox and the images, python3-venv for the images' virtualenvs,
# ca-certificates so pip can reach an HTTPS index.
PACKAGES = ("python3", "python3-venv", "ca-certificates")
RECIPE_VERSION = 1  # bump when the recipe below changes in a way the key does not see
BASE_REPO = "rlvr-base"
DOCKERD_ARGS = ("--bridge=none", "--iptables=false", "--ip-masq=false")
DEFAULT_MIRROR = "http://deb.debian.org/debian"


def debian_mirror(etc_apt: Path = Path("/etc/apt")) -> str:
    """The Debian mirror apt is configured with (deb822 ``URIs:`` or a ``deb`` line), the
    first one serving the main archive; the public mirror when none is configured."""
    sources = [etc_apt / "sources.list", *sorted((etc_apt / "sources.list.d").glob("*"))]
    for path in sources:
        if path.suffix not in (".list", ".sources") or not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            words = line.split()
            deb822 = len(words) >= 2 and words[0] == "URIs:"
            one_line = len(words) >= 3 and words[0] == "deb" and not words[1].startswith("[")
            if (deb822 or one_line) and "debian" in words[1] and "security" not in words[1]:
                return words[1].rstrip("/")
    return DEFAULT_MIRROR


def base_image_tag(mirror: str | None = None) -> str:
    """``rlvr-base:bookworm-<hash>``: the tag of the base image this recipe builds."""
    recipe = {
        "suite": SUITE,
        "mirror": mirror or debian_mirror(),
        "packages": sorted(PACKAGES),
        "variant": "minbase",
        "version": RECIPE_VERSION,
    }
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    return f"{BASE_REPO}:{SUITE}-{key}"


def _docker(*args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, timeout=timeout, **kw)


def engine_answers(timeout_s: float = 5.0, host: str | None = None) -> bool:
    """Whether a Docker engine answers ``docker version`` (client and server) at ``host``
    (a ``DOCKER_HOST`` URL; default: the client's own setting)."""
    if shutil.which("docker") is None:
        return False
    try:
        r = _docker("version", "--format", "{{.Server.Version}}", timeout=timeout_s, env=_env(host))
    except subprocess.TimeoutExpired:
        return False
    return r.returncode == 0 and bool(r.stdout.strip())


def _env(host: str | None) -> dict[str, str] | None:
    return {**os.environ, "DOCKER_HOST": host} if host else None


def image_present(tag: str, host: str | None = None) -> bool:
    return _docker("image", "inspect", tag, env=_env(host)).returncode == 0


def build_base_image(
    tag: str | None = None, mirror: str | None = None, host: str | None = None
) -> str:
    """Build the base image with debootstrap + ``docker import`` unless ``tag`` exists.

    Needs root (debootstrap chroots) and the mirror. Returns the tag. Raises
    ``RuntimeError`` naming the failing step, with the end of its output.
    """
    mirror = mirror or debian_mirror()
    tag = tag or base_image_tag(mirror)
    if image_present(tag, host):
        return tag
    for tool in ("debootstrap", "docker"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed (scripts/system-deps.sh installs it)")
    with tempfile.TemporaryDirectory(prefix="rlvr-base-") as tmp:
        root = Path(tmp) / "root"
        cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}"]
        r = subprocess.run(
            [*cmd, SUITE, str(root), mirror], capture_output=True, text=True, timeout=900
        )
        if r.returncode != 0:
            raise RuntimeError(f"debootstrap failed ({r.returncode}): {r.stdout[-2000:]}")
        # Apt lists and caches are not needed in an image; keep it small.
        for d in ("var/lib/apt/lists", "var/cache/apt/archives"):
            for entry in (root / d).glob("*"):
                if entry.is_file():
                    entry.unlink()
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        imp = subprocess.run(
            ["docker", "import", "--change", 'CMD ["python3"]', "-", tag],
            stdin=tar.stdout,
            env=_env(host),
            capture_output=True,
            text=True,
            timeout=600,
        )
        tar.wait()
        if imp.returncode != 0:
            raise RuntimeError(f"docker import failed: {imp.stderr[-2000:]}")
    return tag


@dataclass
class Engine:
    """A dockerd this process started (``proc``), or ``None`` for one that was answering."""

    proc: subprocess.Popen | None
    host: str | None = None
    log_path: str | None = None

    @property
    def started(self) -> bool:
        return self.proc is not None

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the engine if this process started it (SIGTERM, then SIGKILL): dockerd
        stops its containers and its containerd on the way down."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def start_engine(
    state_dir: str | None = None,
    log_path: str | None = None,
    env_drop: tuple[str, ...] = (),
    timeout_s: float = 60.0,
) -> Engine:
    """An answering Docker engine: the one already running, else a ``dockerd`` started here.

    Needs root. Without ``state_dir`` the engine is the client's default one (socket
    ``/var/run/docker.sock``, images under ``/var/lib/docker``). With it, a private engine:
    socket ``STATE_DIR.sock``, images under ``STATE_DIR/data`` (kept between starts), run
    state under ``STATE_DIR.run``; other users of the default socket do not see it.
    ``env_drop`` names variables the engine must not inherit. Raises ``RuntimeError``
    saying why no engine could start.
    """
    host = f"unix://{state_dir}.sock" if state_dir else None
    if engine_answers(host=host):
        return Engine(None, host)
    if os.geteuid() != 0:
        raise RuntimeError("no Docker engine answers and starting dockerd needs root")
    if shutil.which("dockerd") is None:
        raise RuntimeError("dockerd is not installed (apt-get install docker.io)")
    args = ["dockerd", *DOCKERD_ARGS]
    if state_dir:
        args += ["--host", str(host), "--data-root", f"{state_dir}/data"]
        args += ["--exec-root", f"{state_dir}.run", "--pidfile", f"{state_dir}.run/dockerd.pid"]
    env = {k: v for k, v in os.environ.items() if k not in env_drop}
    log_path = log_path or os.path.join(tempfile.gettempdir(), "rlvr-dockerd.log")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            args, stdout=log, stderr=log, env=env, cwd="/", start_new_session=True
        )
    engine = Engine(proc, host, log_path)
    deadline = time.monotonic() + timeout_s
    while not engine_answers(timeout_s=2.0, host=host):
        if proc.poll() is not None or time.monotonic() > deadline:
            engine.stop()
            tail = Path(log_path).read_text(errors="replace")[-2000:]
            raise RuntimeError(f"dockerd did not come up (exit {proc.returncode}): {tail}")
        time.sleep(0.1)
    return engine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "base-image", "tag"])
    parser.add_argument("--mirror", help="Debian mirror (default: the one apt uses)")
    parser.add_argument(
        "--state-dir", help="a private engine: socket STATE_DIR.sock, images under STATE_DIR"
    )
    args = parser.parse_args(argv)
    host = f"unix://{args.state_dir}.sock" if args.state_dir else None
    if args.command == "tag":
        print(base_image_tag(args.mirror))
        return 0
    if args.command == "up":
        engine = start_engine(args.state_dir)
        if engine.proc is not None:
            print(
                f"dockerd started (pid {engine.proc.pid}, log {engine.log_path})", file=sys.stderr
            )
    print(build_base_image(mirror=args.mirror, host=host))
    return 0


if __name__ == "__main__":
    sys.exit(main())
