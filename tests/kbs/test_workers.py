"""`kbs --workers N`: a supervisor and N real KBS processes sharing one port.

The supervisor binds nothing; its children listen with SO_REUSEPORT. It
forwards SIGTERM, restarts a child that dies, takes its children with it
when SIGKILLed (PR_SET_PDEATHSIG), and refuses a bad config with exit
status 2 and one line before any child starts. (The protocol across
workers, metrics totals and policy changes: tests/scaleout/test_workers.py.)
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import time
from pathlib import Path

import psutil
import pytest
import requests

from tests.kbs.helpers import Kbs, Material, kbs_toml, run_kbs_expect_exit, sqlite_storage, start_kbs
from tests.procs import free_port

WAIT_SECONDS = 30.0


def wait_for(predicate: object, what: str, kbs: Kbs | None = None, timeout: float = WAIT_SECONDS) -> None:
    """Poll `predicate`; on time-out, fail with `kbs`'s output (the supervisor's view of its workers)."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f":\n{kbs.proc.output()}" if kbs is not None else ""))
        time.sleep(0.1)


def listening_children(kbs: Kbs) -> list[psutil.Process]:
    """The supervisor's children that listen on the KBS port."""
    found = []
    for child in psutil.Process(kbs.proc.popen.pid).children():
        try:
            ports = {c.laddr.port for c in child.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
        except psutil.NoSuchProcess:
            continue
        if kbs.port in ports:
            found.append(child)
    return found


def start_workers(tmp_path: Path, material: Material, count: int = 2, *, extra_http: str = "", env_workers: str | None = None) -> Kbs:
    port = free_port()
    config = kbs_toml(port, material, tmp_path / "repo", as_port=free_port(), storage=sqlite_storage(tmp_path / "kbs.sqlite3"),
                      extra_http=extra_http)
    args = () if env_workers is not None else ("--workers", str(count))
    kbs = start_kbs(tmp_path, config, port, args=args, env={"TRUSTEE_WORKERS": env_workers} if env_workers is not None else None)
    wait_for(lambda: len(listening_children(kbs)) == count, f"{count} workers listening on {port}", kbs)
    return kbs


def gone(pids: list[int]) -> bool:
    return not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids)


def test_workers_share_the_port_and_stop_on_sigterm(tmp_path: Path, material: Material) -> None:
    kbs = start_workers(tmp_path, material)
    try:
        pids = [c.pid for c in listening_children(kbs)]
        assert kbs.proc.popen.pid not in pids  # the supervisor itself binds nothing
        for _ in range(10):
            assert requests.get(f"{kbs.url}/healthz", timeout=10, headers={"Connection": "close"}).status_code == 200
        os.kill(kbs.proc.popen.pid, signal.SIGTERM)  # the supervisor alone: it forwards to the children
        assert kbs.proc.popen.wait(WAIT_SECONDS) == 0
        wait_for(lambda: gone(pids), "the workers to exit")
        assert "2 workers ready" in kbs.proc.output()
    finally:
        kbs.proc.stop()


def test_children_exit_when_the_supervisor_is_killed(tmp_path: Path, material: Material) -> None:
    kbs = start_workers(tmp_path, material)
    pids = [c.pid for c in listening_children(kbs)]
    metrics_dir = Path(listening_children(kbs)[0].environ()["PROMETHEUS_MULTIPROC_DIR"])  # a killed supervisor leaves it
    try:
        os.kill(kbs.proc.popen.pid, signal.SIGKILL)
        kbs.proc.popen.wait(WAIT_SECONDS)
        wait_for(lambda: gone(pids), "the orphaned workers to exit")
        assert metrics_dir.is_dir() and str(kbs.proc.popen.pid) in metrics_dir.name
        # The next start removes the folder the killed supervisor left (its pid is gone).
        again = start_workers(tmp_path / "again", material)
        try:
            assert not metrics_dir.exists()
        finally:
            assert again.proc.stop() == 0
    finally:
        kbs.proc.stop()
        for pid in pids:
            if psutil.pid_exists(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(metrics_dir, ignore_errors=True)


def test_a_dead_worker_is_restarted(tmp_path: Path, material: Material) -> None:
    kbs = start_workers(tmp_path, material)
    try:
        victim = listening_children(kbs)[0].pid
        os.kill(victim, signal.SIGKILL)
        def replaced() -> bool:
            pids = [c.pid for c in listening_children(kbs)]  # one snapshot: two could straddle the victim's death
            return len(pids) == 2 and victim not in pids

        wait_for(replaced, "a replacement worker", kbs)
        assert kbs.proc.popen.poll() is None
        assert f"(pid {victim}) exited with status -9; restarting it" in kbs.proc.output()
        assert requests.get(f"{kbs.url}/healthz", timeout=10).status_code == 200
    finally:
        kbs.proc.stop()


def first_worker_spawned(tmp_path: Path, material: Material) -> tuple[Kbs, psutil.Process]:
    """`kbs --workers 2`, returned as soon as the supervisor has spawned a worker (long before any is ready)."""
    port = free_port()
    config = kbs_toml(port, material, tmp_path / "repo", as_port=free_port(), storage=sqlite_storage(tmp_path / "kbs.sqlite3"))
    kbs = start_kbs(tmp_path, config, port, args=("--workers", "2"), wait=False)
    supervisor = psutil.Process(kbs.proc.popen.pid)
    deadline = time.monotonic() + WAIT_SECONDS
    while (worker := running_worker(supervisor)) is None:
        if time.monotonic() > deadline or kbs.proc.popen.poll() is not None:
            kbs.proc.stop()
            raise AssertionError(f"no worker was spawned:\n{kbs.proc.output()}")
        time.sleep(0.02)
    return kbs, worker


def running_worker(supervisor: psutil.Process) -> psutil.Process | None:
    """A child running a worker's command line (not one forked a moment ago that still runs the supervisor's)."""
    for child in supervisor.children():
        with contextlib.suppress(psutil.Error):
            if child.cmdline()[-2:] == ["--workers", "1"]:
                return child
    return None


def test_a_worker_killed_while_starting_is_restarted(tmp_path: Path, material: Material) -> None:
    """A signal during start-up came from outside (an operator, the OOM killer): that worker is restarted, the start goes on.

    (A worker listens a moment before it reports ready; it was once taken for a failed start, which stopped every worker.)
    """
    kbs, first = first_worker_spawned(tmp_path, material)
    try:
        victim = first.pid
        os.kill(victim, signal.SIGKILL)
        assert "workers ready" not in kbs.proc.output()  # a worker needs far longer than this to import and listen
        kbs.proc.wait_output("2 workers ready")
        pids = [c.pid for c in listening_children(kbs)]
        assert len(pids) == 2 and victim not in pids
        output = kbs.proc.output()
        assert f"(pid {victim}) exited with status -9; restarting it" in output
        assert "while starting" not in output
        assert requests.get(f"{kbs.url}/healthz", timeout=10).status_code == 200
    finally:
        kbs.proc.stop()


def test_a_worker_crashing_while_starting_stops_the_start(tmp_path: Path, material: Material) -> None:
    """A crash signal during start-up is the worker's own fault and would repeat: the start fails with status 1."""
    kbs, victim = first_worker_spawned(tmp_path, material)
    try:
        victim.rlimit(psutil.RLIMIT_CORE, (0, 0))  # no core file in the working directory
        victim.send_signal(signal.SIGSEGV)
        assert kbs.proc.popen.wait(WAIT_SECONDS) == 1
        output = kbs.proc.output()
        assert re.search(rf"worker \d exited with status -{int(signal.SIGSEGV)} while starting; stopping the others", output), output
        assert "workers ready" not in output
    finally:
        kbs.proc.stop()


def test_workers_key_and_environment(tmp_path: Path, material: Material) -> None:
    """`[http_server] workers` applies when neither the flag nor TRUSTEE_WORKERS is set; the variable beats the key."""
    kbs = start_workers(tmp_path / "key", material, 3, extra_http="workers = 3", env_workers="")
    kbs.proc.stop()
    kbs = start_workers(tmp_path / "env", material, 2, extra_http="workers = 3", env_workers="2")
    kbs.proc.stop()


def test_default_is_one_worker_per_core(tmp_path: Path, material: Material) -> None:
    cores = len(os.sched_getaffinity(0))
    if cores == 1:
        pytest.skip("one core: the default is a single process")
    kbs = start_workers(tmp_path, material, cores, env_workers="")
    kbs.proc.stop()


def bad_start(tmp_path: Path, material: Material, *, storage: str = "", extra_http: str = "",
              args: tuple[str, ...] = ("--workers", "2")) -> tuple[int, str]:
    port = free_port()
    config = kbs_toml(port, material, tmp_path / "repo", as_port=free_port(), storage=storage, extra_http=extra_http)
    if "private_key" in extra_http:
        config = config.replace("insecure_http = true", "insecure_http = false")
    return run_kbs_expect_exit(tmp_path, config, args=args)


@pytest.mark.parametrize(
    ("extra_http", "storage", "args", "message"),
    [
        ("unknown_key = 1", "", ("--workers", "2"), "unknown key"),
        ("workers = 0", "", (), "http_server.workers must be 1..256, got 0"),
        ("", "", ("--workers", "0"), "--workers must be 1..256, got 0"),
        ('private_key = "/nonexistent.key"\ncertificate = "/nonexistent.pem"', "", ("--workers", "2"),
         "cannot load certificate/private_key"),
        ("", '[storage_backend]\nstorage_type = "Memory"\n', ("--workers", "2"),
         'storage_backend.storage_type "Memory" is kept inside one process: it cannot be shared by 2 workers'),
    ],
)
def test_config_errors_exit_2_with_one_line_and_no_workers(tmp_path: Path, material: Material, extra_http: str, storage: str,
                                                           args: tuple[str, ...], message: str) -> None:
    code, output = bad_start(tmp_path, material, storage=storage, extra_http=extra_http, args=args)
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == 2, output
    assert len(lines) == 1 and lines[0].startswith("kbs: configuration error:") and message in lines[0], output


def test_memory_storage_defaults_to_one_process(tmp_path: Path, material: Material) -> None:
    port = free_port()
    config = kbs_toml(port, material, tmp_path / "repo", as_port=free_port(), storage='[storage_backend]\nstorage_type = "Memory"\n')
    kbs = start_kbs(tmp_path, config, port, env={"TRUSTEE_WORKERS": ""})
    try:
        assert not listening_children(kbs)
        serving = psutil.Process(kbs.proc.popen.pid).net_connections("tcp")
        assert any(c.laddr.port == port and c.status == psutil.CONN_LISTEN for c in serving)
        assert requests.get(f"{kbs.url}/healthz", timeout=10).status_code == 200
    finally:
        kbs.proc.stop()


def test_a_worker_failing_at_start_stops_the_start(tmp_path: Path, material: Material) -> None:
    """An error only a worker meets (storage that cannot be opened) ends the supervisor with the worker's status."""
    (tmp_path / "not-a-file").mkdir()
    code, output = bad_start(tmp_path, material, storage=sqlite_storage(tmp_path / "not-a-file"))
    assert code == 1, output
    assert "cannot open SQLite store" in output
    assert "while starting; stopping the others" in output


def test_a_port_held_by_another_process_is_refused(tmp_path: Path, material: Material) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = kbs_toml(port, material, tmp_path / "repo", as_port=free_port(), storage=sqlite_storage(tmp_path / "kbs.sqlite3"))
        code, output = run_kbs_expect_exit(tmp_path, config, args=("--workers", "2"))
    assert code == 1, output
    assert f"cannot listen on 127.0.0.1:{port}" in output
