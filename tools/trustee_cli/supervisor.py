"""Start, watch and stop the child processes of `trustee run` / `trustee guest`.

Each child is one of our console scripts, started in its own session (so a
terminal Ctrl-C reaches only `trustee`, which then stops the children in
order) with its output appended to `<logs>/<name>.log`. `start` returns
once the child's port accepts connections; a child that exits first, or
does not open its port in time, is an `UpstreamError` carrying the last
lines of its log. `supervise` waits for SIGINT/SIGTERM (exit 0) or for a
child to die (exit 1). `stop_all` sends SIGTERM to every child's process
group, waits up to `STOP_GRACE_SECONDS`, then SIGKILLs stragglers. On Linux each child also
asks the kernel for SIGTERM should `trustee` die without cleaning up.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from trustee_common.errors import ConfigError, UpstreamError
from trustee_common.workers import die_with_parent, probe_bind

logger = logging.getLogger(__name__)

START_TIMEOUT_SECONDS = 60.0
STOP_GRACE_SECONDS = 7.0
POLL_SECONDS = 0.1
LOG_TAIL_LINES = 20
WILDCARD_HOSTS = ("", "0.0.0.0", "::")  # noqa: S104 - names, not binds


def program(name: str) -> str:
    """Path of one of our console scripts next to the running interpreter."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise ConfigError(f"cannot find the {name!r} program at {path}: is the package installed in this environment?")
    return str(path)


def check_port_free(host: str, port: int, flag: str = "") -> None:
    """`ConfigError` if something already listens on `host:port`; the message names the `flag` that moves it."""
    try:
        probe_bind(host, port)
    except OSError as exc:
        hint = f" (choose another with {flag})" if flag else ""
        raise ConfigError(f"cannot use port {port} on {host or '*'}: {exc.strerror or exc}{hint}") from None


def port_open(host: str, port: int) -> bool:
    target = "127.0.0.1" if host in WILDCARD_HOSTS else host
    try:
        with socket.create_connection((target, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class ChildSpec:
    name: str
    argv: list[str]
    port: int
    host: str = "127.0.0.1"
    #: The command-line flag that sets `port`, named when the port is taken.
    port_flag: str = ""


@dataclass
class Child:
    spec: ChildSpec
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_offset: int

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(self.log_offset)
                text = fh.read().decode("utf-8", errors="replace")
        except OSError:
            return "(log unreadable)"
        kept = text.splitlines()[-lines:]
        return "\n".join(f"  | {line}" for line in kept) if kept else "  | (no output)"


class InterruptedStartError(Exception):
    """SIGINT or SIGTERM arrived while children were starting."""


@dataclass
class Supervisor:
    logs_dir: Path
    children: list[Child] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def install_signal_handlers(self) -> None:
        def request_stop(signum: int, _frame: FrameType | None) -> None:
            logger.info("received %s: stopping", signal.Signals(signum).name)
            self._stop.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)

    def start(self, spec: ChildSpec, timeout: float = START_TIMEOUT_SECONDS) -> Child:
        """Start `spec` and wait for its port; raises `UpstreamError` or `InterruptedStartError`."""
        child = self._spawn(spec)
        deadline = time.monotonic() + timeout
        while not port_open(spec.host, spec.port):
            if self._stop.is_set():
                raise InterruptedStartError
            code = child.popen.poll()
            if code is not None:
                raise UpstreamError(f"{spec.name} exited with status {code} while starting; "
                                    f"last lines of {child.log_path}:\n{child.tail()}")
            if time.monotonic() > deadline:
                raise UpstreamError(f"{spec.name} did not open port {spec.port} within {timeout:.0f} s; last lines of "
                                    f"{child.log_path}:\n{child.tail()}")
            self._stop.wait(POLL_SECONDS)
        logger.info("%s is up on port %d (pid %d)", spec.name, spec.port, child.popen.pid)
        return child

    def start_all(self, specs: list[ChildSpec]) -> bool:
        """Start `specs` in order; False if a signal interrupted (all stopped). Any failure stops all and re-raises."""
        try:
            for spec in specs:
                self.start(spec)
        except InterruptedStartError:
            self.stop_all()
            return False
        except BaseException:
            self.stop_all()
            raise
        return True

    def _spawn(self, spec: ChildSpec) -> Child:
        log_path = self.logs_dir / f"{spec.name}.log"
        with log_path.open("ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(spec.argv)}\n".encode())
            log.flush()
            offset = log.tell()
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            popen = subprocess.Popen(spec.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True, preexec_fn=die_with_parent(os.getpid()) if sys.platform == "linux" else None)
        child = Child(spec, popen, log_path, offset)
        self.children.append(child)
        return child

    def supervise(self) -> int:
        """Block until a signal (returns 0) or a child's death (returns 1); children are stopped either way."""
        try:
            while not self._stop.wait(POLL_SECONDS):
                for child in self.children:
                    code = child.popen.poll()
                    if code is not None:
                        print(f"error: {child.spec.name} exited unexpectedly with status {code}; stopping the others. "
                              f"Last lines of {child.log_path}:\n{child.tail()}", file=sys.stderr)
                        return 1
            return 0
        finally:
            self.stop_all()

    def stop_all(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM every running child (last started first), then SIGKILL what is left after `grace`."""
        running = [c for c in reversed(self.children) if c.popen.poll() is None]
        for child in running:
            _signal_group(child, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in running:
            try:
                child.popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop within %.0f s: killing it", child.spec.name, grace)
                _signal_group(child, signal.SIGKILL)
                child.popen.wait()
        for child in running:
            logger.info("%s stopped (status %s)", child.spec.name, child.popen.returncode)


def _signal_group(child: Child, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.popen.pid, sig)
