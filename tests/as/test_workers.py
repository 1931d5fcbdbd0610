"""`grpc-as --workers 2`: two real AS processes on one gRPC port (SO_REUSEPORT) and one metrics port.

Calls over fresh connections reach both workers, `/metrics` at either
reports the totals of both, SIGTERM to the supervisor stops both, and Memory
storage (process-local policies) is refused with more than one worker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import grpc
import psutil
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.mmap_dict import MmapedDict

from tests.procs import Proc, free_port, script

WAIT_SECONDS = 30.0
#: Health checks, each on a connection of its own: both workers get some (all on one: 2^-23).
GRPC_CALLS = 24


def workers_listening(proc: Proc, port: int) -> list[psutil.Process]:
    found = []
    for child in psutil.Process(proc.popen.pid).children():
        try:
            if any(c.laddr.port == port and c.status == psutil.CONN_LISTEN for c in child.net_connections("tcp")):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def wait_for_workers(proc: Proc, ports: list[int], count: int) -> list[psutil.Process]:
    deadline = time.monotonic() + WAIT_SECONDS
    while not all(len(workers_listening(proc, port)) == count for port in ports):
        assert time.monotonic() < deadline, f"{count} workers did not listen on {ports}:\n{proc.output()}"
        time.sleep(0.1)
    return workers_listening(proc, ports[0])


def health_check(address: str) -> int:
    with grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:  # a connection of its own
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        return int(reply.status)


def metric_total(text: str, prefix: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def counted_by(worker: psutil.Process, metric: str) -> float:
    """`metric` (a counter) of one worker, from its multiprocess file."""
    path = Path(worker.environ()["PROMETHEUS_MULTIPROC_DIR"], f"counter_{worker.pid}.db")
    if not path.exists():
        return 0.0
    return sum(value for key, value, *_ in MmapedDict.read_all_values_from_file(str(path)) if json.loads(key)[0] == metric)


def test_two_workers_share_the_grpc_and_metrics_ports(tmp_path: Path) -> None:
    port, metrics_port = free_port(), free_port()
    config = tmp_path / "as.toml"
    config.write_text('work_dir = "/var/lib/as"\n'  # upstream's obsolete key: one warning line
                      f'[storage_backend]\n[storage_backend.backends.sqlite]\npath = "{tmp_path / "as.sqlite3"}"\n'
                      f'[metrics]\naddress = "127.0.0.1:{metrics_port}"\n')
    proc = Proc([script("grpc-as"), "--config-file", str(config), "--socket", f"127.0.0.1:{port}", "--workers", "2"],
                tmp_path / "as.log", port=port)
    try:
        workers = wait_for_workers(proc, [port, metrics_port], 2)
        for _ in range(GRPC_CALLS):
            assert health_check(f"127.0.0.1:{port}") == health_pb2.HealthCheckResponse.SERVING
        assert all(counted_by(w, "as_grpc_requests") > 0 for w in workers)
        scrapes = [requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10, headers={"Connection": "close"}).text
                   for _ in range(6)]
        for text in scrapes:
            assert metric_total(text, 'as_grpc_requests_total{code="OK",method="Check"}') == GRPC_CALLS
        pids = [w.pid for w in workers]
        os.kill(proc.popen.pid, signal.SIGTERM)
        assert proc.popen.wait(WAIT_SECONDS) == 0
        assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids)
        assert proc.output().count("accepted with differences from upstream") == 1  # the supervisor's, not once per worker
    finally:
        proc.stop()


def test_memory_storage_refuses_several_workers(tmp_path: Path) -> None:
    config = tmp_path / "as.toml"
    config.write_text('[storage_backend]\nstorage_type = "Memory"\n')
    done = subprocess.run([script("grpc-as"), "--config-file", str(config), "--socket", f"127.0.0.1:{free_port()}", "--workers", "2"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        'grpc-as: error: storage_backend.storage_type "Memory" is kept inside one process: it cannot be shared by 2 workers '
        "(use Sqlite or Postgres storage, or --workers 1)"
    ]
