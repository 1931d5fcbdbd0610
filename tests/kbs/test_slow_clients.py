"""Slow and numerous connections against a real KBS: header read timeout and connection cap.

A connection that never finishes its request headers is closed after
`header_read_timeout`; at `max_connections` the oldest connection still
sending headers makes room for a new one, and only when none is slow are
new connections refused (a 503 `ServerBusy` answer, then closed); meanwhile `/healthz` answers, and nothing
logs a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import shutil
import signal
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.kbs.helpers import Kbs, Material, kbs_toml, start_kbs, tls_files
from tests.procs import Proc, free_port, script

HEADER_TIMEOUT = 2.0
MAX_CONNECTIONS = 40
BUSY_TYPE = "https://github.com/confidential-containers/kbs/errors/ServerBusy"
PARTIAL = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


@pytest.fixture(scope="module")
def slow_kbs(tmp_path_factory: pytest.TempPathFactory, material: Material) -> Iterator[Kbs]:
    directory = tmp_path_factory.mktemp("kbs-slow")
    port = free_port()
    extra = f"header_read_timeout = {HEADER_TIMEOUT}\nkeep_alive_timeout = 5\nmax_connections = {MAX_CONNECTIONS}"
    server = start_kbs(directory, kbs_toml(port, material, directory / "repo", as_port=free_port(), extra_http=extra), port)
    yield server
    server.proc.stop()


def open_slow(port: int, count: int) -> list[socket.socket]:
    conns = []
    for _ in range(count):
        conn = socket.create_connection(("127.0.0.1", port), timeout=10)
        conn.sendall(PARTIAL)
        conns.append(conn)
    return conns


def closed_by_server(conn: socket.socket, timeout: float) -> bool:
    """True when the server closes `conn` within `timeout` seconds (EOF or reset), sending no response."""
    conn.settimeout(timeout)
    try:
        return conn.recv(1024) == b""
    except (ConnectionResetError, ssl.SSLError):
        return True
    except TimeoutError:
        return False


def healthz(kbs: Kbs) -> int:
    return requests.get(f"{kbs.url}/healthz", timeout=10).status_code


def test_headers_that_never_finish_are_closed_after_the_timeout(slow_kbs: Kbs) -> None:
    conns = open_slow(slow_kbs.port, MAX_CONNECTIONS // 2)
    try:
        started = time.monotonic()
        assert healthz(slow_kbs) == 200  # other clients are served meanwhile
        for conn in conns:
            conn.sendall(b"a")  # trickling bytes does not extend the deadline
        assert all(closed_by_server(c, 20.0) for c in conns)
        assert time.monotonic() - started >= HEADER_TIMEOUT * 0.9
    finally:
        for conn in conns:
            conn.close()
    assert healthz(slow_kbs) == 200


def wait_healthy(kbs: Kbs) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if healthz(kbs) == 200:
                return
        except requests.ConnectionError:
            time.sleep(0.2)
    assert healthz(kbs) == 200


def test_at_the_cap_the_oldest_slow_connection_makes_room(slow_kbs: Kbs) -> None:
    time.sleep(0.5)  # connections of the previous test are gone on the server side too
    conns = open_slow(slow_kbs.port, MAX_CONNECTIONS)
    try:
        time.sleep(0.3)  # let the server accept them all
        started = time.monotonic()
        assert healthz(slow_kbs) == 200  # a whole request is served although the cap is reached ...
        assert time.monotonic() - started < HEADER_TIMEOUT  # ... at once, not after the slow ones time out
        assert closed_by_server(conns[0], 5.0)  # ... by closing the oldest connection still sending headers
        assert all(closed_by_server(c, 20.0) for c in conns[1:])
    finally:
        for conn in conns:
            conn.close()
    wait_healthy(slow_kbs)


def read_to_eof(conn: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes `conn`."""
    conn.settimeout(timeout)
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    return data


def test_connections_above_the_cap_are_answered_busy_when_none_is_slow(slow_kbs: Kbs) -> None:
    """Past the cap with no slow connection to evict, a new connection gets a 503 `ServerBusy` with `Retry-After`
    (what a guest retries later) and is closed, instead of a reset; `requests` reads it as any answer."""
    time.sleep(0.5)
    idle: list[socket.socket] = []
    try:
        for _ in range(MAX_CONNECTIONS):  # kept-alive connections past their headers: nothing to make room with
            conn = socket.create_connection(("127.0.0.1", slow_kbs.port), timeout=10)
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert conn.recv(1024).startswith(b"HTTP/1.1 200")
            idle.append(conn)
        with socket.create_connection(("127.0.0.1", slow_kbs.port), timeout=10) as extra:
            extra.sendall(b"POST /kbs/v0/auth HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}")
            head, _, body = read_to_eof(extra, 5.0).partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        assert lines[0] == "HTTP/1.1 503 Service Unavailable"
        assert {"Retry-After: 1", "Connection: close", f"Content-Length: {len(body)}"} <= set(lines)
        assert json.loads(body) == {"type": BUSY_TYPE,
                                    "detail": f"the KBS is at its limit of {MAX_CONNECTIONS} connections; retry after 1 s"}
        answer = requests.get(f"{slow_kbs.url}/kbs/v0/resource/default/key/one", timeout=10)
        assert (answer.status_code, answer.headers["Retry-After"], answer.json()["type"]) == (503, "1", BUSY_TYPE)
    finally:
        for conn in idle:
            conn.close()
    wait_healthy(slow_kbs)
    assert healthz(slow_kbs) == 200


@pytest.mark.parametrize(
    "data",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n",
        b"POST /kbs/v0/auth HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"version\"",  # then reset
        b"POST /kbs/v0/attest HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_broken_requests_are_answered_or_closed(slow_kbs: Kbs, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", slow_kbs.port), timeout=10) as conn:
        with contextlib.suppress(OSError):
            conn.sendall(data)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # close = reset
    assert healthz(slow_kbs) == 200


def test_no_traceback_in_the_log(slow_kbs: Kbs) -> None:
    log = Path(slow_kbs.proc.log).read_text(errors="replace")
    assert "Traceback" not in log
    assert "request headers took longer" in log


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit (util-linux)")
def test_cap_fits_the_descriptor_limit_and_service_recovers(tmp_path: Path, material: Material) -> None:
    """A cap above the descriptor limit is lowered to fit: excess connections are refused, not a crash or a traceback."""
    port = free_port()
    # A header timeout far above the time the 400 connections take to open on a loaded machine: they all count at once.
    extra = "header_read_timeout = 60\nmax_connections = 1024"
    config = tmp_path / "kbs.toml"
    config.write_text(kbs_toml(port, material, tmp_path / "repo", as_port=free_port(), extra_http=extra))
    proc = Proc(["prlimit", "--nofile=512:512", script("kbs"), "--config-file", str(config)], tmp_path / "kbs.log", port=port)
    conns: list[socket.socket] = []
    try:
        for _ in range(400):
            conn = socket.create_connection(("127.0.0.1", port), timeout=10)
            conns.append(conn)
            with contextlib.suppress(OSError):  # refused ones may be reset already
                conn.sendall(PARTIAL)
        time.sleep(1.5)  # without the fitted cap the server would run out of descriptors accepting these
        for conn in conns:
            conn.close()
        deadline = time.monotonic() + 20
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "the KBS did not recover"
            time.sleep(0.5)
        log = proc.output()
        assert ("open-file limit (512) cannot hold max_connections = 1024 and a listen backlog of 1024: serving at most 252 "
                "connections with a backlog of 100") in log
        assert "at max_connections (252): closing the oldest connection still sending its request headers" in log
        assert "Traceback" not in log and "out of system resource" not in log
        assert log.count("closing the oldest connection") < 10  # rate-limited
    finally:
        for conn in conns:
            conn.close()
        proc.stop()


BURST = 400


def test_a_burst_of_connections_waits_in_the_backlog_while_the_kbs_is_stalled(tmp_path: Path, material: Material) -> None:
    """While every KBS process is stopped (a stand-in for an event loop busy under load), the kernel completes the
    handshakes of a burst of new connections and holds them for the KBS (asyncio's default backlog of 100 would drop
    the SYNs of the rest, and their clients would retry only after 1 s, then 3 s); resumed, the KBS answers each."""
    port = free_port()
    server = start_kbs(tmp_path, kbs_toml(port, material, tmp_path / "repo", as_port=free_port()), port)
    conns: list[socket.socket] = []
    try:
        os.killpg(server.proc.popen.pid, signal.SIGSTOP)
        try:
            for _ in range(BURST):
                conn = socket.socket()
                conn.setblocking(False)
                assert conn.connect_ex(("127.0.0.1", port)) in (0, errno.EINPROGRESS)
                conns.append(conn)
            poller = select.poll()
            waiting = {conn.fileno(): conn for conn in conns}
            for fd in waiting:
                poller.register(fd, select.POLLOUT)
            deadline = time.monotonic() + 0.9  # below the 1 s a dropped SYN waits for its first retry
            while waiting and time.monotonic() < deadline:
                for fd, _ in poller.poll(max(0.0, deadline - time.monotonic()) * 1000):
                    poller.unregister(fd)
                    del waiting[fd]
            assert not waiting, f"{len(waiting)} of {BURST} connections were not accepted by the kernel"
            assert all(c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0 for c in conns)
            for conn in conns:
                conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        finally:
            os.killpg(server.proc.popen.pid, signal.SIGCONT)
        for conn in conns:
            conn.setblocking(True)
            conn.settimeout(20)
            assert conn.recv(64).startswith(b"HTTP/1.1 200 ")
        assert "Traceback" not in server.proc.output()
    finally:
        for conn in conns:
            conn.close()
        server.proc.stop()


def test_https_handshake_and_headers_are_bounded(tmp_path: Path, material: Material) -> None:
    """Over TLS, a client that never completes the handshake or its headers is closed after the timeout."""
    cert, key, ca_pem = tls_files(tmp_path)
    port = free_port()
    text = kbs_toml(port, material, tmp_path / "repo", as_port=free_port(), extra_http=f"header_read_timeout = {HEADER_TIMEOUT}")
    text = text.replace("insecure_http = true", f'insecure_http = false\nprivate_key = "{key}"\ncertificate = "{cert}"')
    server = start_kbs(tmp_path, text, port)
    context = ssl.create_default_context(cadata=ca_pem.decode())
    try:
        silent = socket.create_connection(("127.0.0.1", port), timeout=10)  # never starts the handshake
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        slow = context.wrap_socket(raw, server_hostname="127.0.0.1")
        slow.sendall(PARTIAL)
        with silent, slow:
            assert closed_by_server(silent, 20.0)
            assert closed_by_server(slow, 20.0)
        assert "Traceback" not in server.proc.output()
    finally:
        server.proc.stop()
