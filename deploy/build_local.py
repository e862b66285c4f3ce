"""Build the API or the worker image without a registry and smoke-test it.

The Dockerfiles' base is a build arg (``BASE_IMAGE``, default the public
``python:3.11-slim-bookworm`` for the API, NVIDIA's CUDA base for the worker). Here it is the
Debian image ``deploy/engine.py`` builds with debootstrap; Python packages come from PyPI
(``docker build --network host``), and the API's CPU build of torch from a wheel directory
served on loopback (``--wheels``) where download.pytorch.org cannot be reached. Where HTTPS
goes through an intercepting proxy, ``--ca-bundle`` (default ``$PIP_CERT``) adds its CA to
the build's base image.

    python3 deploy/build_local.py [--state-dir DIR] [--wheels /opt/wheels] [--tag rlvr-api:local]
    python3 deploy/build_local.py --image worker [--tag rlvr-worker:local]

The worker (``--image worker``) takes uv from ``UV_IMAGE``, by default ghcr.io's: here an
image built by deploy/docker/uv.Dockerfile (uv from PyPI), and ``UV_PYTHON_DOWNLOADS=never``,
so that uv uses the Debian base's python3.11 instead of downloading a CPython. Its torch,
vLLM and Ray are the real pins, CUDA wheels from PyPI (several GB).

Prints one JSON line: the tags, each step's seconds, the image's size and the smoke test's
outputs. The smoke test runs ``rlvr --help`` and ``rlvr verify`` (math and code; the code
verifier's bubblewrap sandbox inside the container) in the built image, with no network; in
the worker, also the imports of torch, Ray and vLLM.
"""

from __future__ import annotations

import argparse
import functools
import glob
import hashlib
import http.server
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _engine_module():
    spec = importlib.util.spec_from_file_location("rlvr_deploy_engine", REPO / "deploy/engine.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("rlvr_deploy_engine", module)
    spec.loader.exec_module(module)
    return module


# The wheel server's port. Fixed: the URL is a build arg, and a build arg that changes
# misses the build cache of every layer after it (a random port cost a full reinstall).
WHEELS_PORT = 28080


def serve_directory(
    path: str, port: int = WHEELS_PORT
) -> tuple[http.server.ThreadingHTTPServer, str]:
    """An HTTP server for ``path`` on a loopback port (its listing is a pip find-links
    page); the caller shuts it down."""
    handler = functools.partial(_QuietHandler, directory=path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # pip asks many times; keep the output readable
        pass


def torch_wheel_version(wheels: str) -> str | None:
    """The version of the CPU torch wheel in ``wheels`` (``2.13.0`` of
    ``torch-2.13.0+cpu-...whl``), or ``None``."""
    for path in sorted(glob.glob(os.path.join(wheels, "torch-*+cpu-*.whl"))):
        return Path(path).name.split("-")[1].split("+")[0]
    return None


def docker(env: dict[str, str], *args: str, timeout: float = 3600) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def base_with_ca(env: dict[str, str], base: str, ca_bundle: str) -> str:
    """``base`` plus this machine's CA bundle, trusted by pip (``PIP_CERT``) and by Python's
    ``ssl`` (``SSL_CERT_FILE``): for a network whose HTTPS goes through an intercepting proxy.
    Its tag carries a hash of the bundle; built once."""
    data = Path(ca_bundle).read_bytes()
    tag = f"{base}-ca-{hashlib.sha256(data).hexdigest()[:12]}"
    if docker(env, "image", "inspect", tag).returncode == 0:
        return tag
    with tempfile.TemporaryDirectory() as ctx:
        (Path(ctx) / "ca-certificates.crt").write_bytes(data)
        (Path(ctx) / "Dockerfile").write_text(
            f"FROM {base}\n"
            "COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt\n"
            "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \\\n"
            "    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt\n"
        )
        r = docker(
            {**env, "DOCKER_BUILDKIT": "0"}, "build", "--force-rm", "-t", tag, ctx, timeout=600
        )
    if r.returncode != 0:
        raise RuntimeError(f"docker build of {tag} failed:\n{(r.stdout + r.stderr)[-4000:]}")
    return tag


def docker_build(
    env: dict[str, str], dockerfile: str, tag: str, args: dict[str, str], timeout: float = 3600
) -> float:
    """``docker build --network host`` of ``deploy/docker/<dockerfile>`` (context: the
    repository) with build ``args``, at low CPU priority; its seconds. Raises with the end of
    the build's output on a failure."""
    cmd = ["nice", "-n", "10", "docker", "build", "--force-rm", "--network", "host"]
    cmd += ["-f", f"deploy/docker/{dockerfile}", "-t", tag]
    for k, v in args.items():
        cmd += ["--build-arg", f"{k}={v}"]
    t0 = time.monotonic()
    r = subprocess.run(
        [*cmd, str(REPO)],
        env={**env, "DOCKER_BUILDKIT": "0"},  # the engine here has no buildx plugin
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if r.returncode != 0:
        raise RuntimeError(f"docker build of {tag} failed:\n{(r.stdout + r.stderr)[-4000:]}")
    return time.monotonic() - t0


def build_api_image(
    env: dict[str, str], base: str, tag: str, wheels: str | None
) -> tuple[float, dict[str, str]]:
    """``docker build`` of deploy/docker/api.Dockerfile on ``base``; (seconds, build args)."""
    args = {"BASE_IMAGE": base}
    server = None
    if wheels and (version := torch_wheel_version(wheels)):
        server, url = serve_directory(wheels)
        args |= {
            "PIP_FIND_LINKS": url,
            "TORCH_VERSION": version,
            "TORCH_INDEX_URL": "https://pypi.org/simple",
        }
    try:
        return docker_build(env, "api.Dockerfile", tag, args), args
    finally:
        if server is not None:
            server.shutdown()


def build_worker_image(
    env: dict[str, str], base: str, tag: str, uv_tag: str = "rlvr-uv:local"
) -> tuple[dict[str, float], dict[str, str]]:
    """deploy/docker/uv.Dockerfile (uv from PyPI) as ``uv_tag``, then
    deploy/docker/worker.Dockerfile on ``base`` with it and the base's own Python;
    ({step: seconds}, the worker's build args)."""
    seconds = {"uv_build_s": docker_build(env, "uv.Dockerfile", uv_tag, {"BASE_IMAGE": base})}
    args = {"BASE_IMAGE": base, "UV_IMAGE": uv_tag, "UV_PYTHON_DOWNLOADS": "never"}
    seconds["build_s"] = docker_build(env, "worker.Dockerfile", tag, args, timeout=7200)
    return seconds, args


SMOKE_CODE = {
    "tests": [{"stdin": "2 3\n", "stdout": "5\n"}],
}
SMOKE_COMPLETION = (
    "<think>add</think>\n```python\na, b = map(int, input().split())\nprint(a + b)\n```"
)


# The worker's imports, and what its torch sees: CUDA wheels, run here without a GPU.
WORKER_IMPORTS = (
    "import json, torch, ray, vllm; print(json.dumps({'torch': torch.__version__, "
    "'torch_cuda': torch.version.cuda, 'cuda_available': torch.cuda.is_available(), "
    "'ray': ray.__version__, 'vllm': vllm.__version__}))"
)


def smoke_test(env: dict[str, str], tag: str, rlvr: tuple[str, ...] = ()) -> dict[str, str]:
    """``rlvr --help`` and ``rlvr verify`` in the image (no network). ``rlvr``: the command
    that runs the CLI in the image (none where it is the entrypoint, as in the API image).
    Raises on a failure."""
    run = ["run", "--rm", "--network", "none"]
    # bubblewrap in a container: docs/deploy.md, "The sandbox in a container".
    unconfined = ["--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined"]
    out = {}
    r = docker(env, *run, tag, *rlvr, "--help", timeout=120)
    if r.returncode != 0 or "verify" not in r.stdout:
        raise RuntimeError(f"rlvr --help failed: {r.stdout}{r.stderr}")
    out["help"] = r.stdout.splitlines()[0]
    math = ["verify", "-v", "math", "-c", "<think>2+2</think> \\boxed{4}", "-r", "4", "--json"]
    r = docker(env, *run, tag, *rlvr, *math, timeout=300)
    if r.returncode != 0 or json.loads(r.stdout)["score"] != 1.0:
        raise RuntimeError(f"rlvr verify (math) failed: {r.stdout}{r.stderr}")
    out["verify_math"] = r.stdout.strip()
    code = ["verify", "-v", "code", "-c", SMOKE_COMPLETION, "-r", json.dumps(SMOKE_CODE), "--json"]
    code += ["--options", json.dumps({"backend": "local"})]
    r = docker(env, *run, *unconfined, tag, *rlvr, *code, timeout=300)
    if r.returncode != 0 or json.loads(r.stdout)["score"] != 1.0:
        raise RuntimeError(f"rlvr verify (code) failed: {r.stdout}{r.stderr}")
    out["verify_code"] = r.stdout.strip()
    return out


def smoke_test_worker(env: dict[str, str], tag: str) -> dict:
    """The worker image: ``smoke_test`` (the CLI is not its entrypoint), then torch, Ray and
    vLLM imported (no network, no GPU). Raises on a failure."""
    out: dict = smoke_test(env, tag, rlvr=("rlvr",))
    r = docker(env, "run", "--rm", "--network", "none", tag, "python", "-c", WORKER_IMPORTS)
    lines = r.stdout.strip().splitlines()
    if r.returncode != 0 or not lines:
        raise RuntimeError(f"imports failed: {r.stdout}{r.stderr[-3000:]}")
    out["imports"] = json.loads(lines[-1])
    out["imports_stderr_tail"] = r.stderr.strip().splitlines()[-3:]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", help="a private engine (deploy/engine.py --state-dir)")
    parser.add_argument(
        "--wheels", default="/opt/wheels", help="a directory with a torch +cpu wheel"
    )
    parser.add_argument("--image", choices=["api", "worker"], default="api")
    parser.add_argument("--tag", help="default rlvr-api:local, rlvr-worker:local")
    parser.add_argument(
        "--ca-bundle",
        default=os.environ.get("PIP_CERT"),
        help="a CA bundle the build's pip must trust (default $PIP_CERT; '' for none)",
    )
    parser.add_argument("--skip-build", action="store_true", help="smoke-test the existing tag")
    args = parser.parse_args(argv)
    args.tag = args.tag or f"rlvr-{args.image}:local"
    engine_mod = _engine_module()
    t0 = time.monotonic()
    engine = engine_mod.start_engine(args.state_dir)
    env = {**os.environ, **({"DOCKER_HOST": engine.host} if engine.host else {})}
    base = engine_mod.build_base_image(host=engine.host)
    report: dict = {"base_image": base, "base_s": round(time.monotonic() - t0, 1)}
    if args.ca_bundle:
        base = base_with_ca(env, base, args.ca_bundle)
        report["build_base"] = base
    if not args.skip_build and args.image == "api":
        seconds, build_args = build_api_image(env, base, args.tag, args.wheels)
        report |= {"api_image": args.tag, "build_s": round(seconds, 1), "build_args": build_args}
    elif not args.skip_build:
        steps, build_args = build_worker_image(env, base, args.tag)
        report |= {"worker_image": args.tag, "build_args": build_args}
        report |= {k: round(v, 1) for k, v in steps.items()}
    size = docker(env, "image", "inspect", "--format", "{{.Size}}", args.tag).stdout.strip()
    report[f"{args.image}_image_mb"] = round(int(size) / 1e6) if size.isdigit() else None
    t1 = time.monotonic()
    smoke = smoke_test_worker if args.image == "worker" else smoke_test
    report["smoke"] = smoke(env, args.tag)
    report["smoke_s"] = round(time.monotonic() - t1, 1)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
