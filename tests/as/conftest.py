"""One real `rvps` and one real `grpc-as` (GrpcRemote RVPS, CA-issued signing key) for the package."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from tests.procs import Proc, free_port, script
from trustee_common.pki import TokenSigningFiles, ensure_token_signing_material
from trustee_pb import attestation_pb2_grpc, reference_pb2, reference_pb2_grpc


@dataclass
class Stack:
    directory: Path
    keys: TokenSigningFiles
    as_port: int
    rvps_port: int
    as_proc: Proc

    @property
    def as_address(self) -> str:
        return f"127.0.0.1:{self.as_port}"


def write_as_config(directory: Path, body: str) -> Path:
    config = directory / "as.toml"
    storage = f'[storage_backend]\n[storage_backend.backends.sqlite]\npath = "{directory / "as.sqlite3"}"\n'
    config.write_text(storage + body)
    return config


def start_as(directory: Path, config: Path) -> tuple[Proc, int]:
    port = free_port()
    proc = Proc([script("grpc-as"), "--config-file", str(config), "--socket", f"127.0.0.1:{port}"], directory / "as.log", port=port)
    return proc, port


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("as")
    keys = ensure_token_signing_material(directory / "keys")
    rvps_port = free_port()
    rvps_config = directory / "rvps.toml"
    rvps_config.write_text(f'[storage_backend]\n[storage_backend.backends.sqlite]\npath = "{directory / "rvps.sqlite3"}"\n')
    rvps = Proc([script("rvps"), "-c", str(rvps_config), "-a", f"127.0.0.1:{rvps_port}"], directory / "rvps.log", port=rvps_port)
    body = (
        f'[rvps_config]\ntype = "GrpcRemote"\naddress = "http://127.0.0.1:{rvps_port}"\n'
        "[attestation_token_broker]\nduration_min = 5\n"
        f'[attestation_token_broker.signer]\nkey_path = "{keys.token_key}"\ncert_path = "{keys.token_cert_chain}"\n'
    )
    try:
        as_proc, as_port = start_as(directory, write_as_config(directory, body))
    except BaseException:
        rvps.stop()
        raise
    yield Stack(directory, keys, as_port, rvps_port, as_proc)
    assert as_proc.stop() == 0
    assert rvps.stop() == 0


@pytest.fixture
async def channel(stack: Stack) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(stack.as_address) as opened:
        yield opened


@pytest.fixture
def attestation_stub(channel: grpc.aio.Channel) -> attestation_pb2_grpc.AttestationServiceAsyncStub:
    return attestation_pb2_grpc.AttestationServiceStub(channel)


@pytest.fixture
def rvps_proxy(channel: grpc.aio.Channel) -> reference_pb2_grpc.ReferenceValueProviderServiceAsyncStub:
    """The RVPS service as served (proxied) on the AS port."""
    return reference_pb2_grpc.ReferenceValueProviderServiceStub(channel)


def sample_message(values: dict[str, object]) -> reference_pb2.ReferenceValueRegisterRequest:
    payload = base64.b64encode(json.dumps(values).encode()).decode()
    return reference_pb2.ReferenceValueRegisterRequest(message=json.dumps({"version": "0.1.0", "type": "sample", "payload": payload}))
