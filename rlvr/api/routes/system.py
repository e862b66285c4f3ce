"""Liveness, example specs, and the dashboard's pages (``/metrics``: routes/prometheus.py)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import FileResponse

import rlvr
from rlvr.api.deps import RunnerDep, StoreDep, require_token
from rlvr.api.models import ExampleSpec, Health, RayHealth

router = APIRouter(tags=["system"])

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


def examples_dir() -> Path:
    """``examples/`` of the source checkout (the demo specs), if this is one."""
    return Path(rlvr.__file__).resolve().parent.parent / "examples"


def plotly_js() -> Path | None:
    """plotly.min.js as shipped inside the ``plotly`` Python package (no CDN: offline)."""
    try:
        import plotly
    except ImportError:
        return None
    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    return path if path.is_file() else None


@router.get("/healthz", response_model=Health)
def healthz(store: StoreDep, runner: RunnerDep) -> Health:
    """Liveness: the store answers; what the runner knows about Ray."""
    state = runner.state()
    return Health(
        status="ok", version=rlvr.__version__, jobs=store.count_by_status(),
        ray=RayHealth(**vars(state)),
    )  # fmt: skip


@router.get(
    "/v1/examples",
    response_model=list[ExampleSpec],
    tags=["jobs"],
    dependencies=[Depends(require_token)],
)
def list_examples() -> list[ExampleSpec]:
    """Example job specs (YAML) the dashboard's submit form offers."""
    from rlvr.config import JobSpec

    out = []
    folder = examples_dir()
    if folder.is_dir():
        for path in sorted(folder.glob("*.yaml")):
            out.append(ExampleSpec(name=path.stem, yaml=path.read_text()))
    if not out:
        import yaml

        spec = JobSpec(name="defaults").model_dump(mode="json")
        out.append(ExampleSpec(name="defaults", yaml=yaml.safe_dump(spec, sort_keys=False)))
    return out


# -- the dashboard -------------------------------------------------------------------------------
@router.get("/", include_in_schema=False)
def dashboard() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


@router.get("/static/vendor/plotly.min.js", include_in_schema=False)
def plotly_bundle() -> FileResponse:
    path = plotly_js()
    if path is None:
        raise HTTPException(404, detail="the plotly package is not installed: pip install plotly")
    return FileResponse(
        path, media_type="text/javascript", headers={"Cache-Control": "max-age=86400"}
    )
