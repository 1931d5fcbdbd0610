"""Start the project's real processes on loopback for tests.

`Proc` runs a console script (or `python -m`) with its output captured to
a log file, waits until a TCP port accepts connections, and stops the
process group on exit. Tests use it through fixtures, never to mock.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.ports import allocate_ports

BIN = Path(sys.executable).parent


def free_port() -> int:
    """A loopback port for a helper server, race-free across test processes (see `tests.ports`)."""
    return allocate_ports(1)[0]


def wait_port(port: int, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open within {timeout}s")


class Proc:
    """A started process; `stop()` sends SIGTERM to its group and waits."""

    def __init__(self, args: list[str], log: Path, *, port: int | None = None, env: dict[str, str] | None = None,
                 cwd: Path | None = None, timeout: float = 30.0, unset: tuple[str, ...] = ()) -> None:
        """`env` is added to this process's environment; `unset` names variables taken out of the result."""
        self.args = args
        self.log = log
        self._logfh = log.open("ab")
        full_env = {k: v for k, v in {**os.environ, **(env or {})}.items() if k not in unset}
        self.popen = subprocess.Popen(
            args, stdout=self._logfh, stderr=subprocess.STDOUT, env=full_env, cwd=cwd, start_new_session=True
        )
        if port is not None:
            try:
                wait_port(port, timeout, self.popen)
            except Exception:
                self.stop()
                raise RuntimeError(f"{args[0]} did not start:\n{self.output()}") from None

    def output(self) -> str:
        self._logfh.flush()
        return self.log.read_text(errors="replace")

    def wait_output(self, text: str, timeout: float = 30.0) -> str:
        """The log once it contains `text`: a server may log its start-up line just after its port opens."""
        deadline = time.monotonic() + timeout
        while text not in (out := self.output()):
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in the output of {self.args[0]}:\n{out}")
            time.sleep(0.05)
        return out

    def stop(self, timeout: float = 10.0) -> int:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self._logfh.close()
        return self.popen.returncode


def script(name: str) -> str:
    """Path of one of our console scripts in the running interpreter's environment."""
    return str(BIN / name)
