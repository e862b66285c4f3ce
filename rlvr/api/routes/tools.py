"""``/v1/tools``: the tools a job may enable in ``tools.enabled`` (docs/tools.md)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

router = APIRouter(prefix="/v1", tags=["tools"])


class ToolOut(BaseModel):
    name: str
    description: str


@router.get("/tools", response_model=list[ToolOut])
def get_tools() -> list[ToolOut]:
    """Name and description of every tool (built-ins and ``rlvr.tools`` plugins)."""
    from rlvr.tools.registry import list_tools

    return [ToolOut(**vars(t)) for t in list_tools()]
