"""Fixtures for the deploy/ checks: deploy/render.py and deploy/validate.py as modules, and the
parsed files they check."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses/typing need the module registered
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def render():
    return _load("rlvr_deploy_render", REPO / "deploy" / "render.py")


@pytest.fixture(scope="session")
def validate():
    return _load("rlvr_deploy_validate", REPO / "deploy" / "validate.py")


@pytest.fixture(scope="session")
def versions(render):
    return render.load_versions(REPO)


@pytest.fixture(scope="session")
def compose():
    return yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text())


@pytest.fixture(scope="session")
def manifests() -> dict[tuple[str, str], dict]:
    """Every object in deploy/kuberay/, by (kind, name)."""
    objects = {}
    for path in sorted((REPO / "deploy" / "kuberay").glob("*.yaml")):
        for obj in yaml.safe_load_all(path.read_text()):
            if obj:
                objects[(obj["kind"], obj["metadata"]["name"])] = obj
    return objects


@pytest.fixture
def deploy_copy(tmp_path) -> Path:
    """A scratch copy of what deploy/render.py reads and writes."""
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(REPO / "deploy", tmp_path / "deploy", ignore=shutil.ignore_patterns(".env"))
    (tmp_path / "docs").mkdir()
    shutil.copy(REPO / "docs" / "deploy.md", tmp_path / "docs" / "deploy.md")
    return tmp_path


@pytest.fixture(scope="session")
def vendor_kuberay():
    return _load("rlvr_deploy_vendor_kuberay", REPO / "deploy" / "schemas" / "vendor_kuberay.py")
