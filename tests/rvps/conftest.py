"""A real `rvps` process per test module, with a SQLite store and a start-up values file."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from tests.procs import Proc, free_port, script
from trustee_pb import reference_pb2_grpc

STARTUP_VALUES: list[dict[str, object]] = [
    {"name": "file_live", "value": ["from-file"]},
    {"name": "file_dated", "value": 7, "expiration": "2999-01-02T03:04:05Z"},
    {"name": "file_expired", "value": ["old"], "expiration": "2001-01-01T00:00:00Z"},
]


@dataclass
class RvpsProcess:
    proc: Proc
    port: int
    config: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def write_config(directory: Path, *, values: list[dict[str, object]] | None = None, extra: str = "") -> Path:
    lines = [extra]
    if values is not None:
        values_file = directory / "values.json"
        values_file.write_text(json.dumps(values))
        lines.append(f'reference_values_path = "{values_file}"')
    lines += ["[storage_backend]", 'storage_type = "Sqlite"', "[storage_backend.backends.sqlite]", f'path = "{directory / "rvps.sqlite3"}"']
    config = directory / "rvps.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


def start_rvps(directory: Path, config: Path) -> RvpsProcess:
    port = free_port()
    proc = Proc([script("rvps"), "-c", str(config), "-a", f"127.0.0.1:{port}"], directory / "rvps.log", port=port)
    return RvpsProcess(proc, port, config)


@pytest.fixture(scope="module")
def rvps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RvpsProcess]:
    directory = tmp_path_factory.mktemp("rvps")
    started = start_rvps(directory, write_config(directory, values=STARTUP_VALUES))
    yield started
    assert started.proc.stop() == 0, started.proc.output()


@pytest.fixture
async def stub(rvps: RvpsProcess) -> AsyncIterator[reference_pb2_grpc.ReferenceValueProviderServiceAsyncStub]:
    async with grpc.aio.insecure_channel(rvps.address) as channel:
        yield reference_pb2_grpc.ReferenceValueProviderServiceStub(channel)
