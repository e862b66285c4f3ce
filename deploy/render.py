"""Render image tags and versions into deploy/ from one place, or find where they drifted.

The sources: ``pyproject.toml`` (the project's version, the pinned Ray, requires-python, the
vLLM floor) and ``deploy/versions.env`` (everything pyproject does not pin: Python minor,
torch/vLLM/CUDA for the worker image, Postgres, ...). The targets: the Dockerfiles' ``ARG``
defaults, compose's build args and ``image:`` tags, the manifests' images and
``rayVersion``, and the image names quoted in the docs.

    python deploy/render.py            # exit 1 and show a diff if any file disagrees
    python deploy/render.py --write    # rewrite the files in place

Rendering is line-based and only touches the values it owns, so comments and layout stay.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
VERSIONS_FILE = REPO / "deploy" / "versions.env"

# Every file whose versions are rendered (paths relative to the repository root).
TARGETS = [
    "deploy/docker/api.Dockerfile",
    "deploy/docker/worker.Dockerfile",
    "deploy/docker/uv.Dockerfile",
    "deploy/compose.yaml",
    "deploy/kuberay/raycluster.yaml",
    "deploy/kuberay/api.yaml",
    "deploy/kuberay/postgres.yaml",
    "deploy/kuberay/rayjob.yaml",
    "deploy/README.md",
    "docs/deploy.md",
]

REQUIRED_KEYS = [
    "IMAGE_REGISTRY",
    "PYTHON_VERSION",
    "VLLM_VERSION",
    "TORCH_VERSION",
    "CUDA_VERSION",
    "UBUNTU_VERSION",
    "UV_VERSION",
    "POSTGRES_VERSION",
    "PSYCOPG_VERSION",
    "KUBERAY_VERSION",
]


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines; ``#`` comments and blank lines skipped; no quoting or expansion."""
    values: dict[str, str] = {}
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Z][A-Z0-9_]*", key):
            raise ValueError(f"{path}:{lineno}: expected KEY=value, got {raw!r}")
        values[key] = value
    return values


def _pyproject(root: Path) -> dict:
    return tomllib.loads((root / "pyproject.toml").read_text())


def _requirement(requirements: list[str], name: str) -> Requirement:
    for text in requirements:
        req = Requirement(text)
        if req.name.lower() == name:
            return req
    raise ValueError(f"pyproject.toml declares no requirement on {name}")


def load_versions(root: Path = REPO) -> dict[str, str]:
    """All rendered values: versions.env, plus RLVR_VERSION and RAY_VERSION from pyproject,
    plus the derived image references."""
    versions = read_env_file(root / "deploy" / "versions.env")
    missing = [k for k in REQUIRED_KEYS if not versions.get(k)]
    if missing:
        raise ValueError(f"deploy/versions.env: set {', '.join(missing)}")
    if "/" not in versions["IMAGE_REGISTRY"]:
        raise ValueError(
            "deploy/versions.env: IMAGE_REGISTRY must be <host>/<path>, "
            f"e.g. ghcr.io/you/rlvr, got {versions['IMAGE_REGISTRY']!r}"
        )
    project = _pyproject(root)["project"]
    ray = _requirement(project["dependencies"], "ray")
    pins = [s.version for s in ray.specifier if s.operator == "=="]
    if len(pins) != 1:
        raise ValueError(f"pyproject.toml must pin ray exactly (ray==X.Y.Z), has {ray}")
    versions["RLVR_VERSION"] = project["version"]
    versions["RAY_VERSION"] = pins[0]
    cuda_major_minor = ".".join(versions["CUDA_VERSION"].split(".")[:2])
    registry = versions["IMAGE_REGISTRY"].rstrip("/")
    versions["API_IMAGE"] = f"{registry}/rlvr-api:{project['version']}"
    versions["WORKER_IMAGE"] = f"{registry}/rlvr-worker:{project['version']}-cu{cuda_major_minor}"
    versions["POSTGRES_IMAGE"] = f"postgres:{versions['POSTGRES_VERSION']}"
    return versions


def check_against_pyproject(versions: dict[str, str], root: Path = REPO) -> list[str]:
    """Where versions.env contradicts pyproject.toml's constraints (empty if it does not)."""
    project = _pyproject(root)["project"]
    problems = []
    python = Version(versions["PYTHON_VERSION"])
    if python not in SpecifierSet(project["requires-python"]):
        problems.append(
            f"PYTHON_VERSION={python} does not satisfy requires-python "
            f"{project['requires-python']!r} in pyproject.toml"
        )
    for key, name, reqs in [
        ("VLLM_VERSION", "vllm", project["optional-dependencies"]["vllm"]),
        ("TORCH_VERSION", "torch", project["dependencies"]),
    ]:
        req = _requirement(reqs, name)
        if Version(versions[key]) not in req.specifier:
            problems.append(f"{key}={versions[key]} does not satisfy {req} in pyproject.toml")
    return problems


# -- rendering ----------------------------------------------------------------------------
_IMAGE_REF = r"[\w.\-]+(?::\d+)?(?:/[\w.\-]+)*/{name}:[\w.\-]+"


def render_text(text: str, versions: dict[str, str], dockerfile: bool) -> str:
    """``text`` with every value this module owns set from ``versions``."""
    # Our images, wherever they are named (image: lines, docker build -t, prose).
    for name, key in [("rlvr-api", "API_IMAGE"), ("rlvr-worker", "WORKER_IMAGE")]:
        text = re.sub(_IMAGE_REF.format(name=re.escape(name)), versions[key], text)
    if dockerfile:
        # ARG NAME=value, for the names versions.env and pyproject define.
        def arg(m: re.Match) -> str:
            return f"{m[1]}{versions[m[2]]}" if m[2] in versions else m[0]

        return re.sub(r"(?m)^(ARG\s+([A-Z_]+)=)(\S+)$", arg, text)

    # YAML/Markdown: build args (`    NAME: "value"`), rayVersion and the Postgres image.
    def build_arg(m: re.Match) -> str:
        return f'{m[1]}"{versions[m[2]]}"' if m[2] in versions else m[0]

    text = re.sub(r'(?m)^(\s+([A-Z_]+):\s*)"[^"\n]*"', build_arg, text)
    text = re.sub(
        r'(?m)^(\s*rayVersion:\s*)"[^"\n]*"', lambda m: f'{m[1]}"{versions["RAY_VERSION"]}"', text
    )
    text = re.sub(r"(?m)^(\s*image:\s*)postgres:\S+", rf"\g<1>{versions['POSTGRES_IMAGE']}", text)
    return text


def render_file(path: Path, versions: dict[str, str]) -> str:
    return render_text(path.read_text(), versions, dockerfile=path.name.endswith("Dockerfile"))


def drift(root: Path = REPO) -> list[str]:
    """Problems: contradictions with pyproject.toml, then a unified diff per drifted file."""
    versions = load_versions(root)
    problems = check_against_pyproject(versions, root)
    for rel in TARGETS:
        path = root / rel
        if not path.exists():
            problems.append(f"{rel}: missing (deploy/render.py renders it)")
            continue
        current, rendered = path.read_text(), render_file(path, versions)
        if current != rendered:
            diff = difflib.unified_diff(
                current.splitlines(keepends=True),
                rendered.splitlines(keepends=True),
                f"{rel} (committed)",
                f"{rel} (rendered)",
            )
            problems.append("".join(diff))
    return problems


def write(root: Path = REPO) -> list[str]:
    """Render every target in place; returns the files that changed."""
    versions = load_versions(root)
    changed = []
    for rel in TARGETS:
        path = root / rel
        rendered = render_file(path, versions)
        if rendered != path.read_text():
            path.write_text(rendered)
            changed.append(rel)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render deploy/ versions from one place.")
    parser.add_argument("--write", action="store_true", help="rewrite drifted files in place")
    args = parser.parse_args(argv)
    try:
        if args.write:
            conflicts = check_against_pyproject(load_versions())
            if conflicts:
                print("\n".join(conflicts), file=sys.stderr)
                return 1
            for rel in write():
                print(f"rendered {rel}")
            return 0
        problems = drift()
    except (ValueError, OSError) as exc:
        print(f"deploy/render.py: {exc}", file=sys.stderr)
        return 2
    if problems:
        print("\n".join(problems), file=sys.stderr)
        print(
            "fix: edit deploy/versions.env or pyproject.toml, then run "
            "`python deploy/render.py --write`",
            file=sys.stderr,
        )
        return 1
    print("deploy/: versions agree with deploy/versions.env and pyproject.toml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
