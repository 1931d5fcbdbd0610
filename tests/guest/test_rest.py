"""The `api-server-rest` process over a real AA, without a KBS.

Covers routing, features, input checks, the loopback-only rule, error
statuses when the CDH or the AA cannot help, and the pure helpers. The
resource flow through CDH and KBS is in test_e2e.py.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import yarl

from guest.rest import routes
from tests.guest.guestprocs import STOP_SIGNALS, GuestProc, run_once, start_aa, start_rest
from tests.procs import free_port
from trustee_common.errors import MalformedRequestError


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rest")


@pytest.fixture(scope="module")
def aa(tmp: Path) -> Iterator[GuestProc]:
    proc = start_aa(tmp)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def rests(tmp: Path, aa: GuestProc) -> Iterator[dict[str, GuestProc]]:
    cdh_down = f"127.0.0.1:{free_port()}"
    procs = {
        "all": start_rest(tmp, aa.addr, cdh_down, "all", bind_host="0.0.0.0", name="all"),
        "resource": start_rest(tmp, aa.addr, cdh_down, "resource", name="resource"),
        "attestation": start_rest(tmp, aa.addr, cdh_down, "attestation", name="attestation"),
    }
    yield procs
    for proc in procs.values():
        proc.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def fetch(http: aiohttp.ClientSession, proc: GuestProc, path: str, method: str = "GET", **kwargs: object) -> tuple[int, bytes]:
    url = yarl.URL(f"http://127.0.0.1:{proc.port}{path}", encoded=True)  # sent exactly as written
    async with http.request(method, url, **kwargs) as response:  # type: ignore[arg-type]
        return response.status, await response.read()


async def test_info_reports_tee_and_feature(rests: dict[str, GuestProc], http: aiohttp.ClientSession) -> None:
    status, body = await fetch(http, rests["all"], "/info")
    assert status == 200
    info = json.loads(body)
    assert info["tee"] == "sample" and info["feature"] == "all" and info["version"]
    assert "additional_tees" not in info
    status, body = await fetch(http, rests["resource"], "/info")
    assert status == 200 and json.loads(body).keys() == {"version", "feature"}


@pytest.mark.parametrize(
    ("query", "report_data"),
    [("runtime_data=a+b%20c", b"a b c"), ("runtime_data=AAEC_w&encoding=base64", b"\x00\x01\x02\xff"), ("runtime_data=", b"")],
)
async def test_evidence_decodes_runtime_data(rests: dict[str, GuestProc], http: aiohttp.ClientSession, query: str,
                                             report_data: bytes) -> None:
    status, body = await fetch(http, rests["all"], f"/aa/evidence?{query}")
    assert status == 200
    assert json.loads(body) == {"svn": "1", "report_data": base64.b64encode(report_data).decode()}


async def test_additional_evidence_is_empty_without_devices(rests: dict[str, GuestProc], http: aiohttp.ClientSession) -> None:
    assert await fetch(http, rests["all"], "/aa/additional-evidence?runtime_data=x") == (200, b"")


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/aa/evidence", b"missing query parameter runtime_data"),
        ("/aa/evidence?runtime_data=AAE=&encoding=base64", b"runtime_data: not base64url without padding"),
        ("/aa/evidence?runtime_data=00&encoding=hex", b"unsupported encoding 'hex'"),
        ("/aa/additional-evidence?encoding=base64", b"missing query parameter runtime_data"),
        ("/aa/token", b"missing query parameter token_type"),
        ("/aa/token?token_type=", b"missing query parameter token_type"),
        ("/aa/token?token_type=magic", b"unknown token type 'magic'"),
        ("/cdh/resource/a/%2e%2e/b", b"resource URI"),
        ("/cdh/resource/default/a%2Fb/c", b"resource URI"),
        ("/cdh/resource/default//c", b"resource URI"),
    ],
)
async def test_bad_input_is_400(rests: dict[str, GuestProc], http: aiohttp.ClientSession, path: str, message: bytes) -> None:
    status, body = await fetch(http, rests["all"], path)
    assert status == 400
    assert message in body


async def test_aael_reports_event_log_disabled(rests: dict[str, GuestProc], http: aiohttp.ClientSession) -> None:
    event = {"domain": "github.com/confidential-containers", "operation": "PullImage", "content": "{}"}
    status, body = await fetch(http, rests["all"], "/aa/aael", "POST", json=event)
    assert status == 200
    assert json.loads(body) == {"success": "false", "message": "Attestation Agent does not enable eventlog recording"}
    status, body = await fetch(http, rests["all"], "/aa/aael", "POST", data=b"{not json")
    assert status == 400 and b"not JSON" in body


@pytest.mark.parametrize(("data", "message"), [(b'{"domain":' + b"[" * 20_000 + b"]" * 20_000 + b"}", b"nested deeper"),
                                               (b'{"domain": NaN}', b"not JSON")])
async def test_aael_hostile_json_is_400(rests: dict[str, GuestProc], http: aiohttp.ClientSession, data: bytes, message: bytes) -> None:
    status, body = await fetch(http, rests["all"], "/aa/aael", "POST", data=data)
    assert status == 400 and message in body
    assert "Traceback" not in rests["all"].output()


def test_headers_that_never_finish_are_closed(rests: dict[str, GuestProc]) -> None:
    """The guest API closes connections whose request headers are not complete within 10 s."""
    proc = rests["resource"]
    conns = [socket.create_connection(("127.0.0.1", proc.port), timeout=30) for _ in range(5)]
    try:
        for conn in conns:
            conn.sendall(b"GET /info HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        with socket.create_connection(("127.0.0.1", proc.port), timeout=10) as other:  # others are served meanwhile
            other.sendall(b"GET /info HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            assert other.recv(64).startswith(b"HTTP/1.1 200")
        for conn in conns:
            assert conn.recv(64) == b""  # closed by the server well before the 30 s socket timeout
    finally:
        for conn in conns:
            conn.close()


@pytest.mark.parametrize(
    ("proc", "path", "method", "status", "body"),
    [
        ("all", "/nothing/here", "GET", 404, b"URL NOT FOUND"),
        ("all", "/aa/unknown", "GET", 404, b"URL NOT FOUND"),
        ("all", "/aa/token?token_type=kbs", "POST", 404, b"URL NOT FOUND"),
        ("all", "/info", "POST", 405, b"Method Not Allowed"),
        ("all", "/cdh/resource/a/b/c", "DELETE", 405, b"method not allowed"),
        ("resource", "/aa/token?token_type=kbs", "GET", 404, b"Attestation Feature Not Enabled"),
        ("resource", "/aa/evidence?runtime_data=x", "GET", 404, b"Attestation Feature Not Enabled"),
        ("attestation", "/cdh/resource/default/key/1", "GET", 404, b"Resource Feature Not Enabled"),
    ],
)
async def test_routing_and_features(rests: dict[str, GuestProc], http: aiohttp.ClientSession, proc: str, path: str, method: str,
                                    status: int, body: bytes) -> None:
    assert await fetch(http, rests[proc], path, method) == (status, body)


async def test_unreachable_dependencies_are_503(rests: dict[str, GuestProc], http: aiohttp.ClientSession) -> None:
    status, body = await fetch(http, rests["all"], "/cdh/resource/default/key/1")
    assert status == 503 and b"confidential data hub" in body and b"unreachable" in body
    # The AA answers but has no KBS configured.
    status, body = await fetch(http, rests["all"], "/aa/token?token_type=kbs")
    assert status == 503 and b"token_configs.kbs" in body


def non_loopback_address() -> str | None:
    """An IPv4 address of this machine that is not loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))
            address = str(sock.getsockname()[0])
        except OSError:
            return None
    return None if routes.is_loopback(address) or address == "0.0.0.0" else address


async def test_non_loopback_peer_is_forbidden(rests: dict[str, GuestProc], http: aiohttp.ClientSession) -> None:
    address = non_loopback_address()
    if address is None:
        pytest.skip("no non-loopback IPv4 address on this machine (the peer rule is covered by test_is_loopback)")
    async with http.get(f"http://{address}:{rests['all'].port}/info") as response:
        assert (response.status, await response.read()) == (403, b"Forbidden")
    assert f"refused a request from non-loopback peer {address}" in rests["all"].output()


@pytest.mark.parametrize(
    ("host", "expected"),
    [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("::ffff:127.0.0.1", True), ("192.0.2.2", False),
     ("::ffff:192.0.2.2", False), ("fe80::1%eth0", False), ("localhost", False), (None, False), ("", False)],
)
def test_is_loopback(host: str | None, expected: bool) -> None:
    assert routes.is_loopback(host) is expected


def test_resource_uri_rejects_bad_paths() -> None:
    assert routes.resource_uri("default/key/1") == "kbs:///default/key/1"
    for bad in ("", "a/../b", "a/%2F/b", "a/b c/d"):
        with pytest.raises(MalformedRequestError):
            routes.resource_uri(bad)


def test_curl_gets_evidence(rests: dict[str, GuestProc]) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    result = subprocess.run([curl, "-sS", "-w", "\n%{http_code}", f"http://127.0.0.1:{rests['all'].port}/aa/evidence?runtime_data=hi"],
                            capture_output=True, text=True, timeout=20, check=False)
    body, code = result.stdout.rsplit("\n", 1)
    assert code == "200"
    assert json.loads(body) == {"svn": "1", "report_data": base64.b64encode(b"hi").decode()}


@pytest.mark.parametrize("signum", STOP_SIGNALS, ids=lambda s: s.name)
def test_stops_cleanly_on_signal(tmp_path: Path, signum: int) -> None:
    proc = start_rest(tmp_path, f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}")
    proc.wait_output(f"api-server-rest listening on http://127.0.0.1:{proc.port}")
    assert proc.signal_and_wait(signum) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--bind", "8006"], "--bind: '8006' is not host:port"), (["--aa_addr", "nowhere"], "--aa_addr"),
     (["--bind", "127.0.0.1:70000"], "port 70000 is out of range")],
)
def test_bad_flags_stop_start_up(args: list[str], message: str) -> None:
    result = run_once("api-server-rest", *args)
    assert result.returncode == 1
    assert message in result.stderr


def test_unknown_feature_is_a_usage_error() -> None:
    result = run_once("api-server-rest", "--features", "everything")
    assert result.returncode == 2
    assert "invalid choice: 'everything'" in result.stderr
