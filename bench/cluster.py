"""Start a Trustee deployment of several replicas as real processes on loopback.

One RVPS, `as_replicas` Attestation Services and `kbs_replicas` KBSs, all on
free 127.0.0.1 ports (with `builtin_as`, only the KBSs: each runs the AS
inside, `coco_as_builtin`). Key material and the base configs come from
`trustee_cli.material.prepare_server_dir` (the `trustee run` layout), so
every AS signs tokens with the same key and chain and every KBS trusts the
same CA (or, with `signer_per_as`, each AS has its own key issued by that
CA). Each KBS replica gets its own config file (its port, its AS
replica: KBS i talks to AS i mod `as_replicas`), and each AS and KBS
replica runs `workers` processes on its port. Storage is embedded (SQLite
files and a resource directory shared by the replicas of a service) or one
PostgreSQL database (`storage_url`, resources with `KvStorage`); KBS
sessions may go to Redis instead (`redis_url`). Used by tests/scaleout and
`python -m bench.flow`; it replaces nothing of the code it starts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tomli_w import dumps
from trustee_cli.configs import LOOPBACK, ServerPaths, ServerSettings, as_config, builtin_as_table, kbs_config
from trustee_cli.material import prepare_server_dir, write_private

from trustee_common.pki import issue_leaf, pem_cert, pem_private_key

BIN = Path(sys.executable).parent
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0
#: Environment variables that would override the configs written here.
OVERRIDING_ENV = ("POSTGRES_URL", "REDIS_URL")


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (held open together while choosing)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind((LOOPBACK, 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def wait_port(port: int, popen: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise RuntimeError(f"exited with {popen.returncode} before port {port} opened")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open within {timeout}s")


@dataclass
class Service:
    """One started process, its port and its log file."""

    name: str
    argv: list[str]
    port: int
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    #: With several workers: started once the log says so (the port opens with the first worker).
    ready_text: str | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k not in OVERRIDING_ENV}
        with self.log.open("ab") as log:
            self.popen = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            wait_port(self.port, self.popen, START_TIMEOUT_SECONDS)
            if self.ready_text is not None:
                self.wait_log(self.ready_text)
        except (RuntimeError, TimeoutError) as exc:
            self.stop()
            raise RuntimeError(f"{self.name} did not start ({exc}):\n{self.output()}") from None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_log(self, text: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while text not in self.output():
            if self.popen is not None and self.popen.poll() is not None:
                raise RuntimeError(f"exited with {self.popen.returncode} before logging {text!r}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{text!r} not logged within {START_TIMEOUT_SECONDS}s")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL, as a crash: no shutdown code runs."""
        if self.popen is not None and self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(STOP_TIMEOUT_SECONDS)

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill()


def ready_text(workers: int) -> str | None:
    """What a supervisor of several workers logs once all listen (`trustee_common.workers`)."""
    return None if workers == 1 else f"{workers} workers ready"


@dataclass
class Cluster:
    """RVPS, AS replicas and KBS replicas under `root`; use as a context manager."""

    root: Path
    storage_url: str | None = None
    kbs_replicas: int = 1
    as_replicas: int = 1
    redis_url: str | None = None
    session_timeout_minutes: float | None = None
    #: Give each AS replica its own token-signing key, issued by the one CA the KBSs trust (instead of one shared key).
    signer_per_as: bool = False
    #: `--workers` of every KBS (processes sharing each replica's port), and of every AS unless `as_workers` is set.
    workers: int = 1
    #: `--workers` of every AS (None: `workers`).
    as_workers: int | None = None
    #: Extra `[http_server]` keys of every KBS (`python -m bench --kbs-http KEY=VALUE`).
    kbs_http: dict[str, Any] = field(default_factory=dict)
    #: Extra `[policy_engine]` keys of every KBS and AS (`python -m bench --policy-engine KEY=VALUE`).
    policy_engine: dict[str, Any] = field(default_factory=dict)
    #: The AS inside each KBS (`coco_as_builtin`, BuiltIn RVPS in the KBS's storage, the same signing key): no AS, no RVPS process.
    builtin_as: bool = False
    services: list[Service] = field(default_factory=list)
    kbs: list[Service] = field(default_factory=list)
    attestation: list[Service] = field(default_factory=list)

    def __post_init__(self) -> None:
        ports = free_ports(1 + self.as_replicas + self.kbs_replicas)
        self.rvps_port = ports[0]
        self.as_ports = ports[1:1 + self.as_replicas]
        self.kbs_ports = ports[1 + self.as_replicas:]
        self.paths = ServerPaths.under(self.root)
        self.settings = ServerSettings(LOOPBACK, self.kbs_ports[0], self.as_ports[0], self.rvps_port, storage_url=self.storage_url)
        prepare_server_dir(self.paths, self.settings)
        if self.policy_engine:
            self.paths.as_config.write_text(dumps(self.as_config()))
        as_configs = [self.as_replica_config(i) for i in range(self.as_replicas)]
        logs = self.paths.logs_dir
        rvps_addr = f"{LOOPBACK}:{self.rvps_port}"
        self.rvps = Service("rvps", [str(BIN / "rvps"), "--config", str(self.paths.rvps_config), "--address", rvps_addr],
                            self.rvps_port, logs / "rvps.log")
        for i, port in enumerate(self.as_ports):
            argv = [str(BIN / "grpc-as"), "--config-file", str(as_configs[i]), "--socket", f"{LOOPBACK}:{port}",
                    "--workers", str(self.as_count)]
            self.attestation.append(Service(f"as{i}", argv, port, logs / f"as{i}.log", ready_text=ready_text(self.as_count)))
        for i, port in enumerate(self.kbs_ports):
            config_path = self.paths.kbs_dir / f"replica-{i}.toml"
            config_path.write_text(dumps(self.kbs_config(port, self.as_ports[i % self.as_replicas])))
            self.kbs.append(Service(f"kbs{i}", [str(BIN / "kbs"), "--config-file", str(config_path),
                                                  "--workers", str(self.workers)], port, logs / f"kbs{i}.log",
                                    ready_text=ready_text(self.workers)))
        self.services = [*self.kbs] if self.builtin_as else [self.rvps, *self.attestation, *self.kbs]
        if self.builtin_as:
            self.attestation = []

    @property
    def as_count(self) -> int:
        return self.workers if self.as_workers is None else self.as_workers

    def as_replica_config(self, index: int) -> Path:
        """The shared AS config, or with `signer_per_as` one naming a signing key of this replica's own."""
        if not self.signer_per_as:
            return self.paths.as_config
        directory = self.paths.as_dir / f"replica-{index}"
        directory.mkdir(exist_ok=True)
        ca_key = serialization.load_pem_private_key((self.paths.as_dir / "ca.key").read_bytes(), password=None)
        ca_cert = x509.load_pem_x509_certificate((self.paths.as_dir / "ca.pem").read_bytes())
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        key, cert = issue_leaf(ca_key, ca_cert, f"pytrustee attestation service replica {index}")
        write_private(directory / "token.key", pem_private_key(key))
        (directory / "token-cert-chain.pem").write_bytes(pem_cert(cert) + pem_cert(ca_cert))
        config = self.as_config()
        config["attestation_token_broker"]["signer"] = {"key_path": str(directory / "token.key"),
                                                        "cert_path": str(directory / "token-cert-chain.pem")}
        path = directory / "config.toml"
        path.write_text(dumps(config))
        return path

    def as_config(self) -> dict[str, Any]:
        config: dict[str, Any] = as_config(self.paths, self.settings)
        if self.policy_engine:
            config.setdefault("policy_engine", {}).update(self.policy_engine)
        return config

    def kbs_config(self, port: int, as_port: int) -> dict[str, Any]:
        config: dict[str, Any] = kbs_config(self.paths, self.settings)
        config["http_server"]["sockets"] = [f"{LOOPBACK}:{port}"]
        config["attestation_service"]["as_addr"] = f"http://{LOOPBACK}:{as_port}"
        config["http_server"].update(self.kbs_http)
        if self.policy_engine:
            config.setdefault("policy_engine", {}).update(self.policy_engine)
        if self.builtin_as:
            config["attestation_service"] = self.builtin_as_table()
        if self.session_timeout_minutes is not None:
            config["attestation_service"]["timeout"] = self.session_timeout_minutes
        if self.redis_url is not None:
            config["session_storage_type"] = "Redis"
            config["storage_backend"].setdefault("backends", {})["redis"] = {"url": self.redis_url}
        return config

    def builtin_as_table(self) -> dict[str, Any]:
        """`[attestation_service]` of `coco_as_builtin` (`trustee run --as builtin`'s)."""
        table: dict[str, Any] = builtin_as_table(self.paths, self.settings)
        if self.session_timeout_minutes is not None:
            table["timeout"] = self.session_timeout_minutes
        return table

    @property
    def kbs_urls(self) -> list[str]:
        return [f"http://{LOOPBACK}:{port}" for port in self.kbs_ports]

    @property
    def admin_token(self) -> str:
        return str(self.paths.admin_token.read_text().strip())

    def start(self) -> Cluster:
        try:
            for service in self.services:
                service.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
