"""Malformed HTTP and the `Allow` header of 405, against a real KBS over raw sockets.

A request aiohttp's parser refuses (a NUL byte or a bare CR in a header, a
bad request line, a header name with characters outside RFC 9110's token)
is answered 400 in the KBS's JSON error shape, the connection is closed,
and the KBS log holds one line about it and no traceback.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import aiohttp
import pytest

from tests.kbs.helpers import Kbs, variant

MALFORMED = {
    "nul-in-header-value": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Test: a\x00b\r\n\r\n",
    "bad-request-line": b"GET /healthz HTTP/1.1 trailing\r\nHost: x\r\n\r\n",
    "bad-version": b"GET /healthz HTTP/9.Z\r\nHost: x\r\n\r\n",
    "bad-header-name": b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad(Name): v\r\n\r\n",
    "space-before-colon": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Test : v\r\n\r\n",
    "no-colon": b"GET /healthz HTTP/1.1\r\nHost: x\r\nnocolon\r\n\r\n",
    "bad-content-length": b"POST /kbs/v0/auth HTTP/1.1\r\nHost: x\r\nContent-Length: 12abc\r\n\r\n",
    "bad-method": b"G\x01T /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
}


def exchange(kbs: Kbs, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `raw`, read until the server closes the connection; (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", kbs.port), timeout=30) as sock:
        sock.sendall(raw)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    return status, headers, body


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_http_is_a_json_400_without_traceback(kbs: Kbs, case: str) -> None:
    status, headers, body = exchange(kbs, MALFORMED[case])
    assert status == 400, body
    assert headers["content-type"].startswith("application/json")
    error: dict[str, Any] = json.loads(body)
    assert set(error) == {"type", "detail"}
    assert variant(error) == "MalformedRequest"
    assert error["detail"].startswith("malformed HTTP request")
    # exchange() read until the server closed the connection
    assert "Traceback" not in kbs.proc.output()


ALLOW_CASES = [
    ("PUT", "/kbs/v0/resource-policy", "GET, POST"),
    ("DELETE", "/kbs/v0/auth", "POST"),
    ("GET", "/kbs/v0/attest", "POST"),
    ("PUT", "/kbs/v0/attestation-policy", "POST"),
    ("PUT", "/kbs/v0/resource/a/b/c", "DELETE, GET, POST"),
    ("PATCH", "/kbs/v0/reference-value", "GET, POST"),
    ("POST", "/kbs/v0/reference-value/some/id", "GET"),
    ("POST", "/healthz", "GET, HEAD"),
    ("POST", "/metrics", "GET, HEAD"),
]


@pytest.mark.parametrize(("method", "path", "allow"), ALLOW_CASES)
async def test_405_allow_lists_what_the_exact_path_serves(
    http: aiohttp.ClientSession, kbs: Kbs, method: str, path: str, allow: str
) -> None:
    async with http.request(method, kbs.url + path, data=b"{}") as response:
        assert response.status == 405
        assert variant(await response.json()) == "MethodNotAllowed"
        assert response.headers["Allow"] == allow
    for served in allow.split(", "):
        async with http.request(served, kbs.url + path, data=b"{}") as response:
            body = await response.read()
            assert response.status not in (404, 405), (served, path, response.status, body)


@pytest.mark.parametrize("method", ["GET", "POST", "PUT"])
async def test_a_sub_path_no_method_serves_is_404(http: aiohttp.ClientSession, kbs: Kbs, method: str) -> None:
    async with http.request(method, kbs.api("resource-policy/extra"), data=b"{}") as response:
        assert response.status == 404
        assert variant(await response.json()) == "InvalidRequestPath"
        assert "Allow" not in response.headers
