"""Real `rvps`, `grpc-as` and `kbs` processes with the audit log, JSON logs and metrics addresses configured.

The AS and RVPS log at DEBUG in JSON (one line per gRPC call, carrying the
request id); the KBS writes its audit log to `audit.jsonl` and serves
`/metrics` on its own address only. A second KBS writes its audit log to
`/dev/full`, where every write fails (ENOSPC), to show the failure policy.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.kbs.helpers import Kbs, Material, kbs_toml, make_material, start_kbs
from tests.procs import Proc, script
from tests.tools.stack import free_ports

DEBUG_JSON = {"TRUSTEE_LOGLEVEL": "DEBUG", "TRUSTEE_LOG_FORMAT": "json"}
PREEXISTING_LINE = '{"event":"written before the KBS started"}\n'


@dataclass
class Stack:
    root: Path
    material: Material
    kbs: Kbs
    full: Kbs
    rvps: Proc
    as_proc: Proc
    audit: Path
    kbs_metrics_port: int
    as_metrics_port: int
    rvps_metrics_port: int


def _storage(path: Path) -> str:
    return f'[storage_backend]\nstorage_type = "Sqlite"\n[storage_backend.backends.sqlite]\npath = "{path}"\n'


def _kbs_extra(audit: str, metrics_port: int | None = None) -> str:
    text = f'\n[audit]\npath = "{audit}"\nfsync = "interval"\n\n[logging]\nformat = "json"\n'
    if metrics_port is not None:
        text += f'\n[metrics]\naddress = "127.0.0.1:{metrics_port}"\n'
    return text


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("observability")
    material = make_material(root / "material")
    rvps_port, as_port, kbs_port, full_port, kbs_metrics, as_metrics, rvps_metrics = free_ports(7)
    (root / "rvps.toml").write_text(_storage(root / "rvps.sqlite3") + f'[metrics]\naddress = "127.0.0.1:{rvps_metrics}"\n'
                                    + '[audit]\npath = "rvps-audit.jsonl"\n')
    (root / "as.toml").write_text(
        _storage(root / "as.sqlite3")
        + f'[rvps_config]\ntype = "GrpcRemote"\naddress = "127.0.0.1:{rvps_port}"\n'
        + f'[attestation_token_broker.signer]\nkey_path = "{material.token_key}"\ncert_path = "{material.token_chain}"\n'
        + f'[metrics]\naddress = "127.0.0.1:{as_metrics}"\n'
        + '[audit]\npath = "as-audit.jsonl"\nfsync = "always"\n'
    )
    procs: list[Proc] = []
    try:
        rvps = Proc([script("rvps"), "--config", str(root / "rvps.toml"), "--address", f"127.0.0.1:{rvps_port}"],
                    root / "rvps.log", port=rvps_port, env=DEBUG_JSON)
        procs.append(rvps)
        as_proc = Proc([script("grpc-as"), "--config-file", str(root / "as.toml"), "--socket", f"127.0.0.1:{as_port}"],
                       root / "as.log", port=as_port, env=DEBUG_JSON)
        procs.append(as_proc)
        audit = root / "audit" / "audit.jsonl"
        audit.parent.mkdir()
        audit.write_text(PREEXISTING_LINE)
        kbs = start_kbs(root / "kbs", kbs_toml(kbs_port, material, root / "kbs" / "repo", as_port=as_port)
                        + _kbs_extra(str(audit), kbs_metrics), kbs_port)
        procs.append(kbs.proc)
        full = start_kbs(root / "full", kbs_toml(full_port, material, root / "full" / "repo", as_port=as_port) + _kbs_extra("/dev/full"),
                         full_port)
        procs.append(full.proc)
        yield Stack(root, material, kbs, full, rvps, as_proc, audit, kbs_metrics, as_metrics, rvps_metrics)
    finally:
        for proc in reversed(procs):
            proc.stop()
