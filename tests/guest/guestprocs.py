"""Start the real guest processes (AA, CDH, REST server) for the guest tests.

Each helper runs our console script on a free loopback port with its log in
the test's temporary directory, and waits until the port accepts
connections. Nothing here replaces our own code.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import grpc

from tests.procs import Proc, free_port, script
from trustee_pb import attestation_agent_pb2_grpc, confidential_data_hub_pb2_grpc

#: Neutral values for the variables that change how the guest processes start
#: (`Proc` lays its env over os.environ, so they are overridden, not removed).
NEUTRAL_ENV = {"AA_KBC_PARAMS": "offline_fs_kbc::", "ENABLE_SAMPLE_DEVICE": "", "TRUSTEE_LOGLEVEL": "INFO"}


def guest_env(**extra: str) -> dict[str, str]:
    return {**NEUTRAL_ENV, **extra}


class GuestProc:
    """A started guest process listening on `port`."""

    def __init__(self, name: str, args: list[str], log: Path, port: int, env: dict[str, str] | None = None) -> None:
        self.port = port
        self.addr = f"127.0.0.1:{port}"
        self.proc = Proc([script(name), *args], log, port=port, env=env if env is not None else guest_env())
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_output(self, text: str) -> str:
        return self.proc.wait_output(text)

    def stop(self) -> int:
        return self.proc.stop()

    def signal_and_wait(self, signum: int, timeout: float = 10.0) -> int:
        os.killpg(self.proc.popen.pid, signum)
        try:
            return self.proc.popen.wait(timeout)
        finally:
            self.proc.stop()


def start_aa(tmp: Path, *extra: str, env: dict[str, str] | None = None, name: str = "aa") -> GuestProc:
    port = free_port()
    return GuestProc("attestation-agent", ["--attestation_sock", f"127.0.0.1:{port}", *extra], tmp / f"{name}.log", port, env)


def start_cdh(tmp: Path, config: str, env: dict[str, str] | None = None, name: str = "cdh") -> GuestProc:
    port = free_port()
    path = tmp / f"{name}.toml"
    path.write_text(f'socket = "127.0.0.1:{port}"\n{config}')
    return GuestProc("confidential-data-hub", ["--config", str(path)], tmp / f"{name}.log", port, env)


def start_rest(tmp: Path, aa_addr: str, cdh_addr: str, features: str = "all", bind_host: str = "127.0.0.1",
               name: str = "rest") -> GuestProc:
    port = free_port()
    args = ["--bind", f"{bind_host}:{port}", "--features", features, "--aa_addr", aa_addr, "--cdh_addr", cdh_addr]
    return GuestProc("api-server-rest", args, tmp / f"{name}.log", port)


def run_once(name: str, *args: str, env: dict[str, str] | None = None, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    """Run a guest console script expected to exit by itself (bad flags or config)."""
    full_env = {**os.environ, **(env if env is not None else guest_env())}
    return subprocess.run([script(name), *args], capture_output=True, text=True, env=full_env, timeout=timeout, check=False)


def aa_stub(channel: grpc.aio.Channel) -> attestation_agent_pb2_grpc.AttestationAgentServiceStub:
    return attestation_agent_pb2_grpc.AttestationAgentServiceStub(channel)


def cdh_stub(channel: grpc.aio.Channel) -> confidential_data_hub_pb2_grpc.GetResourceServiceStub:
    return confidential_data_hub_pb2_grpc.GetResourceServiceStub(channel)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
