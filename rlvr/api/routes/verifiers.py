"""``/v1/verifiers`` and ``/v1/verify``: what can score completions here, and a one-off score.

``/v1/verify`` is bounded on every side, so that no caller can stall the service:

- caller limits have ceilings: options are checked by the verifier's options model (422
  naming the option), and per-run limits above the service's maxima are refused (422):
  ``timeout_s`` <= ``MAX_CASE_TIMEOUT_S`` per test case (math: <= ``verify_timeout_s``),
  ``memory_mb`` <= ``MAX_MEMORY_MB``, at most ``MAX_TEST_CASES`` test cases, references
  nested at most ``MAX_NESTING`` deep;
- admission: each request runs in one worker of the service's own verifier pool
  (``RLVR_VERIFY_WORKERS``), on threads of its own (not the ones other routes use); when all
  are busy the answer is 429 with ``Retry-After``;
- a request that reaches ``RLVR_VERIFY_TIMEOUT_S`` gets a ``timeout`` verdict and its worker
  is killed with everything it started (sandbox runs included): nothing keeps running.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError

from rlvr.api.deps import SettingsDep
from rlvr.api.models import ErrorOut, VerdictOut, VerifierOut, VerifyRequest, nesting_depth
from rlvr.api.validation import verifier_option_problems

if TYPE_CHECKING:
    from verifiers import VerifierPool

router = APIRouter(prefix="/v1", tags=["verifiers"])

MAX_CASE_TIMEOUT_S = 10.0  # code: per test case (options.timeout_s, reference.timeout_s)
MAX_MEMORY_MB = 1024  # code: per sandbox run
MAX_TEST_CASES = 64  # code: stdin/stdout tests or asserts in test_code
MAX_NESTING = 32  # levels of lists/objects in a reference or options
RETRY_AFTER_S = 2
# How long a pool worker may take to start (import sympy) before the request fails.
WORKER_START_S = 30.0


@router.get("/verifiers", response_model=list[VerifierOut])
def get_verifiers() -> list[VerifierOut]:
    """Name, description and reference format of every verifier (built-ins and plugins)."""
    from verifiers import list_verifiers

    return [VerifierOut(**vars(v)) for v in list_verifiers()]


def _invalid(loc: tuple[Any, ...], msg: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ["body", *loc], "msg": msg, "type": "value_error"}])


def _checked(req: VerifyRequest, timeout_cap: float) -> tuple[dict[str, Any], float]:
    """The request's options validated and held to the service's maxima, and its deadline."""
    from verifiers import BadReferenceError, UnknownVerifierError, get_verifier
    from verifiers.options import validate_options

    for field in ("options", "reference"):
        if nesting_depth(getattr(req, field)) > MAX_NESTING:
            raise _invalid((field,), f"nested deeper than {MAX_NESTING} levels")
    try:
        problems = verifier_option_problems(req.verifier, req.options)
    except UnknownVerifierError as exc:
        raise _invalid(("verifier",), str(exc)) from None
    if problems:
        raise RequestValidationError(
            [
                {"loc": ["body", "options", *loc], "msg": f"verifier {req.verifier!r}: {msg}",
                 "type": "value_error"}
                for loc, msg in problems
            ]
        )  # fmt: skip
    options = validate_options(req.verifier, req.options)
    timeout = timeout_cap
    if req.verifier == "code":
        _check_code_limits(options, req.reference)
    elif isinstance(options.get("timeout_s"), int | float):  # (a plugin's may be anything)
        if not 0 < options["timeout_s"] <= timeout_cap:
            raise _invalid(
                ("options", "timeout_s"),
                f"must be > 0 and at most {timeout_cap:g} s here (RLVR_VERIFY_TIMEOUT_S)",
            )
        timeout = float(options["timeout_s"])
    elif req.verifier == "math":
        timeout = min(5.0, timeout_cap)  # the math verifier's own default
    try:
        verifier = get_verifier(req.verifier, **options)
    except (TypeError, ValueError) as exc:  # a plugin's constructor: unknown or bad option
        msg = f"verifier {req.verifier!r} rejects these options: {exc}"
        raise _invalid(("options",), msg) from None
    try:
        verifier.check_reference(req.reference)
    except BadReferenceError as exc:
        raise _invalid(
            ("reference",),
            f"not a valid reference for verifier {req.verifier!r} "
            f"({verifier.reference_format}): {exc}",
        ) from None
    return options, timeout


def _check_code_limits(options: dict[str, Any], reference: Any) -> None:
    if options.get("timeout_s", 0) > MAX_CASE_TIMEOUT_S:
        raise _invalid(("options", "timeout_s"), f"at most {MAX_CASE_TIMEOUT_S:g} s per test here")
    if options.get("memory_mb", 0) > MAX_MEMORY_MB:
        raise _invalid(("options", "memory_mb"), f"at most {MAX_MEMORY_MB} MB per run here")
    if not isinstance(reference, dict):
        return  # check_reference names the problem
    timeout = reference.get("timeout_s")
    number = isinstance(timeout, int | float) and not isinstance(timeout, bool)
    if number and not 0 < float(timeout or 0) <= MAX_CASE_TIMEOUT_S:
        raise _invalid(
            ("reference", "timeout_s"),
            f"must be > 0 and at most {MAX_CASE_TIMEOUT_S:g} s per test here",
        )
    tests = reference.get("tests")
    if isinstance(tests, list) and len(tests) > MAX_TEST_CASES:
        raise _invalid(("reference", "tests"), f"at most {MAX_TEST_CASES} test cases here")
    code = reference.get("test_code")
    if isinstance(code, str) and code.count("assert") > MAX_TEST_CASES:
        raise _invalid(
            ("reference", "test_code"), f"at most {MAX_TEST_CASES} asserts (test cases) here"
        )


class VerifySlots:
    """The service's own verifier pool, its threads, and the admission count (one request
    per pool worker; more are refused, not queued)."""

    def __init__(self, workers: int):
        self.workers = workers
        self.busy = 0
        self._lock = threading.Lock()
        self._pool: VerifierPool | None = None
        self.threads = ThreadPoolExecutor(workers, thread_name_prefix="rlvr-verify")

    def try_acquire(self) -> bool:
        with self._lock:
            if self.busy >= self.workers:
                return False
            self.busy += 1
            return True

    def release(self) -> None:
        with self._lock:
            self.busy -= 1

    def pool(self):
        from verifiers import VerifierPool

        with self._lock:
            if self._pool is None:  # started on first use: a service may never verify
                self._pool = VerifierPool(
                    workers=self.workers,
                    startup_timeout_s=WORKER_START_S,
                    preload=(),  # a replacement is ready at once; a verifier loads on use
                    retire_on_timeout=True,
                )
            return self._pool

    def close(self) -> None:
        self.threads.shutdown(wait=False, cancel_futures=True)
        if self._pool is not None:
            self._pool.close()


def slots(app: FastAPI) -> VerifySlots:
    if getattr(app.state, "verify_slots", None) is None:
        app.state.verify_slots = VerifySlots(app.state.settings.verify_workers)
    return app.state.verify_slots


def close_pool(app: FastAPI) -> None:
    """Stop the /v1/verify workers (the app's shutdown)."""
    if getattr(app.state, "verify_slots", None) is not None:
        app.state.verify_slots.close()
        app.state.verify_slots = None


def _run(slots: VerifySlots, req: VerifyRequest, options: dict[str, Any], timeout: float):
    from verifiers import BadReferenceError

    try:
        item = (req.verifier, options, req.completion, req.reference)
        return slots.pool().verify_many([item], timeout_s=timeout)[0]
    except BadReferenceError as exc:
        raise _invalid(("reference",), f"not a valid reference: {exc}") from None


@router.post(
    "/verify",
    response_model=VerdictOut,
    responses={
        422: {"description": "unknown verifier, a bad option or limit, or a bad reference"},
        429: {"model": ErrorOut, "description": "every verify worker is busy; see Retry-After"},
        504: {"model": ErrorOut, "description": "the verifier did not answer in time"},
    },
)
async def verify(req: VerifyRequest, request: Request, settings: SettingsDep) -> VerdictOut:
    """Score one completion against a reference with one verifier (bounded: see the module
    docstring of ``rlvr.api.routes.verifiers`` and docs/api.md, "Limits")."""
    bounds = slots(request.app)
    if not bounds.try_acquire():
        raise HTTPException(
            429,
            detail=f"all {bounds.workers} verify workers are busy (RLVR_VERIFY_WORKERS); "
            f"retry in {RETRY_AFTER_S} s",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    try:
        loop = asyncio.get_running_loop()
        options, timeout = await loop.run_in_executor(
            bounds.threads, _checked, req, settings.verify_timeout_s
        )
        # The pool kills the worker at `timeout`; the extra is its start-up, not verification.
        verdict = await asyncio.wait_for(
            loop.run_in_executor(bounds.threads, _run, bounds, req, options, timeout),
            timeout + WORKER_START_S + 5.0,
        )
    except TimeoutError:
        raise HTTPException(
            504, detail=f"verifier {req.verifier!r} did not answer within {timeout:.0f} s"
        ) from None
    finally:
        bounds.release()
    out = verdict.to_dict()
    if out["reason"] == "timeout" and not out["details"]:
        out["details"] = {"error": f"stopped after {timeout:g} s (the request's limit)"}
    return VerdictOut(**out)
