"""``/v1/verifiers`` and ``/v1/verify``: what can score completions here, and a one-off score."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, HTTPException
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError

from rlvr.api.models import ErrorOut, VerdictOut, VerifierOut, VerifyRequest

router = APIRouter(prefix="/v1", tags=["verifiers"])

VERIFY_TIMEOUT_S = 60.0  # the code verifier's sandbox has its own, shorter limits


@router.get("/verifiers", response_model=list[VerifierOut])
def get_verifiers() -> list[VerifierOut]:
    """Name, description and reference format of every verifier (built-ins and plugins)."""
    from verifiers import list_verifiers

    return [VerifierOut(**vars(v)) for v in list_verifiers()]


def _verify(req: VerifyRequest) -> VerdictOut:
    from verifiers import BadReferenceError, UnknownVerifierError, get_verifier

    try:
        verifier = get_verifier(req.verifier, **req.options)
    except UnknownVerifierError as exc:
        raise RequestValidationError(
            [{"loc": ["body", "verifier"], "msg": str(exc), "type": "value_error"}]
        ) from None
    except TypeError as exc:
        raise RequestValidationError(
            [{"loc": ["body", "options"], "msg": f"verifier {req.verifier!r} rejects these "
              f"options: {exc}", "type": "value_error"}]
        ) from None  # fmt: skip
    try:
        verifier.check_reference(req.reference)
        verdict = verifier.verify(req.completion, req.reference)
    except BadReferenceError as exc:
        raise RequestValidationError(
            [{"loc": ["body", "reference"], "msg": f"not a valid reference for verifier "
              f"{req.verifier!r} ({verifier.reference_format}): {exc}", "type": "value_error"}]
        ) from None  # fmt: skip
    return VerdictOut(**verdict.to_dict())


@router.post(
    "/verify",
    response_model=VerdictOut,
    responses={
        422: {"description": "unknown verifier or a reference it cannot use"},
        504: {"model": ErrorOut, "description": "the verifier did not answer in time"},
    },
)
async def verify(req: VerifyRequest) -> VerdictOut:
    """Score one completion against a reference with one verifier."""
    try:
        return await asyncio.wait_for(run_in_threadpool(_verify, req), VERIFY_TIMEOUT_S)
    except TimeoutError:
        raise HTTPException(
            504, detail=f"verifier {req.verifier!r} took longer than {VERIFY_TIMEOUT_S:.0f}s"
        ) from None
