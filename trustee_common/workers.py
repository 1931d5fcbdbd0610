"""Several server processes on one address: `--workers N` of the KBS and the AS (adapter).

With `--workers 1` a server is one process, as always. With N > 1 the
command becomes a supervisor that binds nothing itself: it starts N copies
of the same command line with `--workers 1` and the environment marker
`TRUSTEE_WORKER=<index>`. Each copy is a normal single-process server that
listens with SO_REUSEPORT (only when the marker is set), so the kernel
spreads new connections over the copies and a copy is reached only once it
listens. A copy reports that it is ready by writing to an inherited pipe
(`notify_ready`).

The supervisor:

- checks first that no other process listens on the addresses (a second
  instance started by mistake would otherwise silently share the port);
- stops every copy and exits with the copy's status (2: configuration; 1
  for a crash) when one exits by itself or crashes (`CRASH_SIGNALS`) before
  all were ready during start-up;
- restarts a copy that dies later, or that another signal kills at any time
  (it came from outside: an operator, the OOM killer), after 0.5 s doubling
  to 30 s for a copy that keeps dying within a minute of its start (the
  others serve meanwhile);
- forwards SIGTERM/SIGINT as SIGTERM, SIGKILLs what is left after
  `STOP_GRACE_SECONDS`, exits 0;
- gives each copy PR_SET_PDEATHSIG (Linux), so the copies get SIGTERM even
  when the supervisor is SIGKILLed;
- with metrics, points every copy at one fresh private directory
  (`PROMETHEUS_MULTIPROC_DIR`, mode 0700, removed at exit, and by the next
  start when a killed supervisor left it: its name holds the supervisor's pid) so that a scrape
  at any copy reports the totals of all (`trustee_common.metrics_http`).

The number of workers is `--workers`, else `$TRUSTEE_WORKERS`, else the
config key, else the number of cores this process may run on.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import cast

from trustee_common.errors import ConfigError

logger = logging.getLogger(__name__)

#: Set in each copy's environment: its index (0-based). Its presence turns SO_REUSEPORT on.
WORKER_ENV = "TRUSTEE_WORKER"
#: The default number of workers when neither the flag nor ... (see `resolve_workers`).
WORKERS_ENV = "TRUSTEE_WORKERS"
#: The inherited pipe a copy writes one byte to once it listens.
READY_FD_ENV = "TRUSTEE_WORKER_READY_FD"
#: prometheus_client's multiprocess directory.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
MAX_WORKERS = 256
STOP_GRACE_SECONDS = 10.0
POLL_SECONDS = 0.2
FIRST_RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 30.0
#: A copy that lived this long before dying is restarted after the first delay again.
HEALTHY_SECONDS = 60.0
PR_SET_PDEATHSIG = 1
#: Signals a process gets from its own fault: a worker dying of one while starting fails the start (it would again).
CRASH_SIGNALS = frozenset({signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT, signal.SIGSYS})


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_as_workers(cores: int | None = None) -> int:
    """The AS processes `trustee run` (and `python -m bench`) starts when no `--workers` is given: half the cores, at
    least one. The AS does about a third of a flow's server work, so as many AS as KBS processes only contend for
    the cores: on 2 cores one AS worker took 15 % less AS CPU per flow and cut the p99 at 300 flows/s by a
    quarter to a half (docs/scale-out.md)."""
    return max(1, (available_cores() if cores is None else cores) // 2)


def check_count(count: int, where: str) -> int:
    if not 1 <= count <= MAX_WORKERS:
        raise ConfigError(f"{where} must be 1..{MAX_WORKERS}, got {count}")
    return count


def requested_workers(flag: int | None, configured: int | None, environ: Mapping[str, str] | None = None) -> int | None:
    """`--workers`, else `$TRUSTEE_WORKERS`, else the config key; None when none is set."""
    env = os.environ if environ is None else environ
    if flag is not None:
        return check_count(flag, "--workers")
    text = env.get(WORKERS_ENV, "").strip()
    if text:
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(f"environment variable {WORKERS_ENV} must be an integer, got {text!r}") from None
        return check_count(value, f"environment variable {WORKERS_ENV}")
    return configured


def resolve_workers(requested: int | None, *, process_local: str | None = None) -> int:
    """`requested`, else the available cores.

    `process_local` names state that lives in one process (e.g. Memory storage): several
    workers would each have their own, so it defaults to 1 and refuses a request for more.
    """
    if process_local is None:
        return available_cores() if requested is None else requested
    if requested is not None and requested > 1:
        raise ConfigError(f"{process_local} is kept inside one process: it cannot be shared by {requested} workers "
                          "(use Sqlite or Postgres storage, or --workers 1)")
    return 1


def in_worker() -> bool:
    """True in a copy started by the supervisor: listen with SO_REUSEPORT."""
    return WORKER_ENV in os.environ


def notify_ready() -> None:
    """Tell the supervisor (if any) that this copy listens; once."""
    text = os.environ.pop(READY_FD_ENV, None)
    if not text:
        return
    with contextlib.suppress(OSError, ValueError):
        fd = int(text)
        os.write(fd, b"r")
        os.close(fd)


def check_ports_free(addresses: Sequence[tuple[str, int]]) -> None:
    """`ConfigError` for port 0; `OSError` when another process already listens on a port."""
    for host, port in addresses:
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if port == 0:
            raise ConfigError(f"{shown}: port 0 cannot be shared by several workers; name a port")
        try:
            probe_bind(host, port)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot listen on {shown}: {exc.strerror or exc}") from None


def probe_bind(host: str, port: int) -> None:
    """Bind (and release) `host:port` as a server would, with SO_REUSEADDR: `OSError` when something listens there."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))


def child_command(args: Sequence[str]) -> list[str]:
    """This program's command line (same interpreter, script or `-m` module) with `args` and `--workers 1`."""
    orig = list(getattr(sys, "orig_argv", []))
    prefix = orig[1 : len(orig) - len(sys.argv) + 1] if orig and len(orig) >= len(sys.argv) else [sys.argv[0]]
    return [sys.executable, *prefix, *args, "--workers", "1"]


def die_with_parent(parent: int) -> Callable[[], None]:
    """A `preexec_fn`: SIGTERM when the supervisor dies (even by SIGKILL); exit at once if it already has."""

    def arm() -> None:
        if sys.platform == "linux":
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os._exit(1)

    return arm


@dataclass
class _Worker:
    index: int
    popen: subprocess.Popen[bytes] | None = None
    ready_fd: int | None = None
    ready: bool = False
    started: float = 0.0
    delay: float = FIRST_RESTART_DELAY
    restart_at: float | None = None


def failed_start(status: int) -> bool:
    """Whether a worker that died with `status` while starting fails the start: it exited by itself or crashed.

    Any other signal (SIGKILL from an operator or the OOM killer, SIGTERM) came from outside: that worker is restarted."""
    return status >= 0 or -status in CRASH_SIGNALS


def remove_stale_metrics_dirs(name: str) -> list[str]:
    """Remove the metrics folders an earlier `name` supervisor left when it was killed (its pid gone); their paths."""
    removed = []
    for path in Path(tempfile.gettempdir()).glob(f"{name}-metrics-*-*"):
        pid = path.name.removeprefix(f"{name}-metrics-").split("-", 1)[0]
        if not pid.isdigit() or not path.is_dir() or path.stat().st_uid != os.getuid() or _alive(int(pid)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(str(path))
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Supervisor:
    """N copies of `command`; `run` returns the exit status."""

    name: str
    command: list[str]
    count: int
    metrics_dir: str | None = None
    workers: list[_Worker] = field(default_factory=list)
    _stopping: bool = False

    def run(self) -> int:
        self._install_signals()
        for stale in remove_stale_metrics_dirs(self.name):
            logger.info("%s: removed %s, left by a supervisor that was killed", self.name, stale)
        self.metrics_dir = tempfile.mkdtemp(prefix=f"{self.name}-metrics-{os.getpid()}-")  # mode 0700
        try:
            self.workers = [_Worker(i) for i in range(self.count)]
            for worker in self.workers:
                self._start(worker)
            return self._loop()
        finally:
            self._stop_all()
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def _install_signals(self) -> None:
        def request_stop(signum: int, _frame: FrameType | None) -> None:
            if not self._stopping:
                logger.info("%s: received %s: stopping %d workers", self.name, signal.Signals(signum).name, self.count)
            self._stopping = True

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)

    def _start(self, worker: _Worker) -> None:
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        env = {**os.environ, WORKER_ENV: str(worker.index), READY_FD_ENV: str(write_fd)}
        env.pop(WORKERS_ENV, None)
        if self.metrics_dir is not None:
            env[MULTIPROC_ENV] = self.metrics_dir
        try:
            worker.popen = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, env=env, pass_fds=(write_fd,),
                                            preexec_fn=die_with_parent(os.getpid()))
        finally:
            os.close(write_fd)
        worker.ready_fd, worker.ready, worker.started, worker.restart_at = read_fd, False, time.monotonic(), None

    def _loop(self) -> int:
        all_ready = False
        while not self._stopping:
            self._wait_ready()
            if not all_ready and all(w.ready for w in self.workers):
                all_ready = True
                pids = ", ".join(str(w.popen.pid) for w in self.workers if w.popen is not None)
                logger.info("%s: %d workers ready (pids %s)", self.name, self.count, pids)
            for worker in self.workers:
                status = self._reap(worker)
                if status is not None and failed_start(status) and not all_ready:
                    if status != 2:
                        logger.error("%s: worker %d exited with status %d while starting; stopping the others",
                                     self.name, worker.index, status)
                    return status if status in (1, 2) else 1
                if worker.restart_at is not None and time.monotonic() >= worker.restart_at and not self._stopping:
                    self._start(worker)
        return 0

    def _wait_ready(self) -> None:
        fds = [w.ready_fd for w in self.workers if w.ready_fd is not None]
        readable = select.select(fds, [], [], POLL_SECONDS)[0] if fds else []
        if not fds:
            time.sleep(POLL_SECONDS)
        for worker in self.workers:
            if worker.ready_fd is not None and worker.ready_fd in readable:
                with contextlib.suppress(BlockingIOError):
                    worker.ready = os.read(worker.ready_fd, 1) == b"r"
                self._close_pipe(worker)

    def _reap(self, worker: _Worker) -> int | None:
        """The exit status of a copy that just died (restart scheduled), else None."""
        if worker.popen is None or worker.restart_at is not None or self._stopping:
            return None
        status = worker.popen.poll()
        if status is None:
            return None
        self._mark_dead(worker.popen.pid)
        self._close_pipe(worker)
        lived = time.monotonic() - worker.started
        if lived >= HEALTHY_SECONDS:
            worker.delay = FIRST_RESTART_DELAY
        logger.warning("%s: worker %d (pid %d) exited with status %d; restarting it in %.1f s",
                       self.name, worker.index, worker.popen.pid, status, worker.delay)
        worker.restart_at = time.monotonic() + worker.delay
        worker.delay = min(MAX_RESTART_DELAY, worker.delay * 2)
        return status

    def _close_pipe(self, worker: _Worker) -> None:
        if worker.ready_fd is not None:
            os.close(worker.ready_fd)
            worker.ready_fd = None

    def _mark_dead(self, pid: int) -> None:
        if self.metrics_dir is None:
            return
        from prometheus_client import multiprocess

        mark_dead = cast(Callable[[int, str], None], multiprocess.mark_process_dead)  # untyped in prometheus_client
        mark_dead(pid, self.metrics_dir)

    def _stop_all(self) -> None:
        self._stopping = True
        running = [w.popen for w in self.workers if w.popen is not None and w.popen.poll() is None]
        for popen in running:
            with contextlib.suppress(ProcessLookupError):
                popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for popen in running:
            try:
                popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("%s: worker pid %d did not stop within %.0f s: killing it", self.name, popen.pid, STOP_GRACE_SECONDS)
                popen.kill()
                popen.wait()
        for worker in self.workers:
            self._close_pipe(worker)
            if worker.popen is not None:
                self._mark_dead(worker.popen.pid)


def run_workers(name: str, args: Sequence[str], count: int, addresses: Sequence[tuple[str, int]]) -> int:
    """Check `addresses`, then supervise `count` copies of this program (with `args`); the exit status."""
    check_ports_free(addresses)
    logger.info("%s: starting %d workers on %s", name, count, ", ".join(f"{h}:{p}" for h, p in addresses))
    return Supervisor(name, child_command(args), count).run()
