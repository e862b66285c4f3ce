"""Pure ASGI middleware: every request is checked here before anything reads its body.

:class:`Guard`, in order (the first failure answers, the body still unread):

1. ``Host`` must be a trusted name (loopback names, ``RLVR_TRUSTED_HOSTS``): a DNS-rebinding
   page cannot reach the API under its own name (400). ``/healthz`` and ``/metrics`` are
   exempt (probes and scrapers use the pod's address).
2. ``Origin``, when sent, must be a trusted name too (403): a web page elsewhere cannot
   drive the API from a visitor's browser.
3. ``/v1``: the bearer token maps to a user and role (401 otherwise); the principal is put
   in ``scope["state"]["principal"]`` for the routes.
4. A body needs a JSON or YAML media type (415): ``text/plain`` and form posts, which a
   browser sends cross-site without a preflight, are refused.
5. The body is capped: a ``Content-Length`` over ``max_body_bytes`` is 413 at once, and a
   streamed (chunked) body is cut off with 413 when its bytes pass the cap.

:class:`RequestCounter` counts requests for Prometheus with bounded labels.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import Counter

from rlvr.api.auth import ANONYMOUS_ADMIN, TokenTable
from rlvr.api.settings import LOOPBACK_HOSTS

log = logging.getLogger("rlvr.api")
Scope = dict[str, Any]
OPEN_PATHS = ("/healthz", "/metrics")  # answered for any Host: probes and scrapers
BODY_MEDIA_TYPES = (
    "application/json",
    "application/yaml",
    "application/x-yaml",
    "text/yaml",
    "text/x-yaml",
)
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


class BodyTooLarge(Exception):
    """Raised from ``receive`` when a streamed body passes the cap."""


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def _hostname(value: str) -> str:
    """``example.com:8000`` / ``[::1]:80`` -> the lowercased name without the port."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


async def _answer(send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """Host, Origin, auth, media type and body size checks (see the module docstring)."""

    def __init__(
        self, app, *, tokens: TokenTable, trusted_hosts: list[str], max_body_bytes: int
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.any_host = "*" in trusted_hosts
        self.trusted = {*LOOPBACK_HOSTS, *(h.lower() for h in trusted_hosts)}
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = self._check(scope)
        if problem is not None:
            await _answer(send, *problem)
            return
        received = 0
        started = False

        async def capped_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge
            return message

        async def tracked_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, capped_receive, tracked_send)
        except BodyTooLarge:
            if not started:
                await _answer(send, 413, self._too_large())

    def _too_large(self) -> str:
        return f"the request body is larger than {self.max_body_bytes} bytes (RLVR_MAX_BODY_BYTES)"

    def _check(self, scope: Scope) -> tuple[int, str, dict[str, str]] | tuple[int, str] | None:
        path = scope.get("path", "")
        if path not in OPEN_PATHS and not self.any_host:
            host = _hostname(_header(scope, b"host") or "")
            if host not in self.trusted:
                return 400, (
                    f"untrusted Host header {host!r}; add the name this service is reached by "
                    "to RLVR_TRUSTED_HOSTS (comma-separated)"
                )
            origin = _header(scope, b"origin")
            if origin is not None and _hostname(urlsplit(origin).netloc) not in self.trusted:
                return 403, f"requests from origin {origin!r} are not allowed (RLVR_TRUSTED_HOSTS)"
        if path == "/v1" or path.startswith("/v1/"):
            principal = ANONYMOUS_ADMIN if self.tokens.open else self._principal(scope)
            if principal is None:
                return 401, (
                    "missing or wrong bearer token: send 'Authorization: Bearer <token>' "
                    "(RLVR_API_TOKEN or a token of RLVR_TOKENS_FILE)"
                ), {"WWW-Authenticate": "Bearer"}  # fmt: skip
            scope.setdefault("state", {})["principal"] = principal
        length = _header(scope, b"content-length")
        chunked = "chunked" in (_header(scope, b"transfer-encoding") or "").lower()
        has_body = chunked or (length not in (None, "0"))
        ctype = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
        allowed = ctype in BODY_MEDIA_TYPES or ctype.endswith("+json")
        if (has_body or ctype) and scope["method"] not in ("GET", "HEAD") and not allowed:
            return 415, (
                f"unsupported media type {ctype or '(none)'!r}: send a body as "
                "application/json or application/yaml"
            )
        if length is not None:
            if not length.isdigit():
                return 400, "invalid Content-Length"
            if int(length) > self.max_body_bytes:
                return 413, self._too_large()
        return None

    def _principal(self, scope: Scope):
        auth = _header(scope, b"authorization") or ""
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return self.tokens.lookup(token.strip())


class RequestCounter:
    """``rlvr_http_requests_total{method, route, status}``: the route template (not the raw
    path) and a fixed set of methods (anything else counts as ``other``), so no caller can
    create new series."""

    def __init__(self, app, counter: Counter) -> None:
        self.app = app
        self.counter = counter

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def tracked_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        finally:
            method = scope["method"] if scope["method"] in HTTP_METHODS else "other"
            route = getattr(scope.get("route"), "path", "unmatched")
            self.counter.labels(method, route, str(status)).inc()
            log.debug("%s %s %d %.1fms", method, route, status, (time.perf_counter() - start) * 1e3)
