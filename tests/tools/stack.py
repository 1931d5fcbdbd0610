"""Helpers shared by the tools and e2e tests: a real `trustee run`, CLI calls, child pids.

`TrusteeRun` starts the `trustee run` console script on free loopback ports
with its data in a temporary directory and waits until the KBS port opens
(which `trustee` reaches only after RVPS and AS are up). Nothing here
replaces our own code: every call goes to the real processes.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from tests.ports import allocate_ports
from tests.procs import Proc, script

#: Environment variables the tools read as flag fallbacks; tests start from a clean slate.
TOOL_ENV_VARS = ("KBS_CLIENT_URL", "KBS_CLIENT_CERT_FILE", "KBS_CLIENT_ADMIN_TOKEN_FILE", "KBS_CLIENT_AUTH_PRIVATE_KEY",
                 "RVPS_TOOL_ADDR", "TRUSTEE_DATA_DIR", "TRUSTEE_KBS_URL", "TRUSTEE_GUEST_DATA_DIR", "ENABLE_SAMPLE_DEVICE")
START_TIMEOUT = 120.0


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports, race-free across test processes (see `tests.ports`)."""
    return allocate_ports(count)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in TOOL_ENV_VARS}
    env.update(extra)
    return env


def run_tool(name: str, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
             timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
    """Run one of our console scripts once and capture its output."""
    return subprocess.run([script(name), *args], capture_output=True, text=True, cwd=cwd, env=env or clean_env(),
                          timeout=timeout, check=False)


def child_pids(pid: int) -> list[int]:
    """Direct children of `pid`, read from /proc (independent of the code under test)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


def wait_gone(pids: list[int], timeout: float = 5.0) -> list[int]:
    """The pids still alive after waiting up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if pid_alive(p)]
        if not alive:
            return []
        time.sleep(0.05)
    return [p for p in pids if pid_alive(p)]


def wait_output(proc: Proc, text: str, timeout: float = 10.0) -> str:
    """The process's output once it contains `text` (`AssertionError` after `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        output = proc.output()
        if text in output:
            return output
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not in the output of {proc.args[0]}:\n{output}")
        time.sleep(0.05)


class TrusteeRun:
    """A running `trustee run` with free ports and its own data directory."""

    def __init__(self, data_dir: Path, log: Path, *, extra: tuple[str, ...] = (), unset: tuple[str, ...] = ()) -> None:
        """`unset`: environment variables the stack does not inherit (e.g. the suite's `TRUSTEE_WORKERS`)."""
        self.data_dir = data_dir
        self.kbs_port, self.as_port, self.rvps_port = free_ports(3)
        self.url = f"http://127.0.0.1:{self.kbs_port}"
        self.rvps_addr = f"127.0.0.1:{self.rvps_port}"
        args = [script("trustee"), "run", "--data-dir", str(data_dir), "--kbs-port", str(self.kbs_port),
                "--as-port", str(self.as_port), "--rvps-port", str(self.rvps_port), *extra]
        self.proc = Proc(args, log, port=self.kbs_port, env=clean_env(), timeout=START_TIMEOUT, unset=(*TOOL_ENV_VARS, *unset))
        self.banner = wait_output(self.proc, "Stop with Ctrl-C.")

    @property
    def admin_token(self) -> Path:
        return self.data_dir / "admin" / "token"

    def stop(self) -> int:
        return self.proc.stop()
