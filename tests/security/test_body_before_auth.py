"""Finding: bodies were read before auth and before any size check (a 300 MB unauthenticated
POST pushed the server to 1 GB). Now middleware answers from the headers alone: the token
first, then the declared size; a streamed body is cut off once it passes the cap."""

from __future__ import annotations

import pytest

from tests.security.conftest import make_settings, raw_request, serve

TOKEN = "body-test-token-0123456789"


@pytest.fixture(scope="module")
def server(tmp_service):
    with serve(make_settings(tmp_service, api_token=TOKEN, max_body_bytes=100_000)) as srv:
        yield srv


def _head(server, path: str, extra: str) -> str:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Content-Type: application/json\r\n{extra}"
    )


def test_unauthenticated_huge_post_is_refused_before_its_body_is_read(server):
    # 300 MB declared, 10 bytes sent: an answer can only come from the headers.
    answer = raw_request(
        server, _head(server, "/v1/verify", "Content-Length: 300000000\r\n"), b"{" * 10
    )
    assert answer.startswith("HTTP/1.1 401"), answer
    assert "www-authenticate: bearer" in answer.lower()


def test_authenticated_post_declaring_too_many_bytes_is_413_before_reading(server):
    head = _head(
        server, "/v1/verify", f"Authorization: Bearer {TOKEN}\r\nContent-Length: 300000000\r\n"
    )
    answer = raw_request(server, head, b"{" * 10)
    assert answer.startswith("HTTP/1.1 413"), answer


def test_streamed_body_is_cut_off_at_the_cap(server):
    head = _head(
        server, "/v1/jobs", f"Authorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\n"
    )
    chunk = b"x" * 50_000
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(4))  # 200 kB, no end
    answer = raw_request(server, head, body)
    assert answer.startswith("HTTP/1.1 413"), answer


def test_a_body_within_the_cap_still_works(server):
    head = _head(server, "/v1/jobs", f"Authorization: Bearer {TOKEN}\r\nContent-Length: 2\r\n")
    answer = raw_request(server, head, b"[]")
    assert answer.startswith("HTTP/1.1 422"), answer  # parsed: not a mapping
