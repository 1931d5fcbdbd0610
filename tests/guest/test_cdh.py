"""The `confidential-data-hub` process without a KBS: errors, config and CLI checks.

The full resource flow (AA token, KBS, cache, retry) is in test_e2e.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from tests.guest.guestprocs import STOP_SIGNALS, GuestProc, cdh_stub, guest_env, run_once, start_aa, start_cdh
from tests.procs import free_port
from trustee_pb import confidential_data_hub_pb2 as pb
from trustee_pb import confidential_data_hub_pb2_grpc as pb_grpc


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cdh")


@pytest.fixture(scope="module")
def aa_without_kbs(tmp: Path) -> Iterator[GuestProc]:
    proc = start_aa(tmp)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def cdhs(tmp: Path, aa_without_kbs: GuestProc) -> Iterator[dict[str, GuestProc]]:
    kbc = f'[kbc]\nname = "cc_kbc"\nurl = "http://127.0.0.1:{free_port()}"\n'
    procs = {
        "aa_down": start_cdh(tmp, f'{kbc}[aa]\naa_socket = "127.0.0.1:{free_port()}"\n', name="aa_down"),
        "aa_without_kbs": start_cdh(tmp, f'{kbc}[aa]\naa_socket = "{aa_without_kbs.addr}"\n[log]\nlevel = "debug"\n',
                                    name="aa_without_kbs"),
        "no_kbc": start_cdh(tmp, f'[aa]\naa_socket = "{aa_without_kbs.addr}"\n', name="no_kbc"),
    }
    yield procs
    for proc in procs.values():
        proc.stop()


@pytest.fixture
async def channels() -> AsyncIterator[list[grpc.aio.Channel]]:
    opened: list[grpc.aio.Channel] = []
    yield opened
    for channel in opened:
        await channel.close()


async def get_resource(channels: list[grpc.aio.Channel], proc: GuestProc, uri: str) -> grpc.aio.AioRpcError:
    channel = grpc.aio.insecure_channel(proc.addr)
    channels.append(channel)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await cdh_stub(channel).GetResource(pb.GetResourceRequest(ResourcePath=uri))
    return info.value


@pytest.mark.parametrize("uri", ["http://h/a/b/c", "kbs:///a/../b", "kbs://", "kbs:///a//b", "kbs+:///a/b/c"])
async def test_bad_resource_uri_is_invalid_argument(cdhs: dict[str, GuestProc], channels: list[grpc.aio.Channel], uri: str) -> None:
    error = await get_resource(channels, cdhs["aa_down"], uri)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "resource URI" in (error.details() or "")


async def test_attestation_agent_down_is_unavailable(cdhs: dict[str, GuestProc], channels: list[grpc.aio.Channel]) -> None:
    error = await get_resource(channels, cdhs["aa_down"], "kbs:///default/key/1")
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "attestation agent" in (error.details() or "")


async def test_attestation_agent_without_kbs_is_failed_precondition(cdhs: dict[str, GuestProc],
                                                                    channels: list[grpc.aio.Channel]) -> None:
    error = await get_resource(channels, cdhs["aa_without_kbs"], "kbs:///default/key/1")
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "token_configs.kbs" in (error.details() or "")


async def test_no_kbc_is_failed_precondition(cdhs: dict[str, GuestProc], channels: list[grpc.aio.Channel]) -> None:
    error = await get_resource(channels, cdhs["no_kbc"], "kbs:///default/key/1")
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no KBS configured" in (error.details() or "")


async def test_sealed_secrets_without_verification_keys_are_refused(cdhs: dict[str, GuestProc],
                                                                    channels: list[grpc.aio.Channel]) -> None:
    """Unsealing needs a configured key; the full flow is in test_sealed.py."""
    channel = grpc.aio.insecure_channel(cdhs["aa_down"].addr)
    channels.append(channel)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await pb_grpc.SealedSecretServiceStub(channel).UnsealSecret(pb.UnsealSecretInput(secret=b"sealed.a.b.c"))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "sealed_secret.verification_keys" in (info.value.details() or "")


@pytest.mark.parametrize("signum", STOP_SIGNALS, ids=lambda s: s.name)
def test_stops_cleanly_on_signal(tmp_path: Path, signum: int) -> None:
    proc = start_cdh(tmp_path, "")
    proc.wait_output(f"confidential-data-hub listening on 127.0.0.1:{proc.port}")
    assert proc.signal_and_wait(signum) == 0


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ('sockett = "127.0.0.1:1"\n', "unknown key(s) in config: sockett"),
        ('socket = "127.0.0.1"\n', "socket: '127.0.0.1' is not host:port"),
        ('[kbc]\nname = "offline_fs_kbc"\n', "kbc.name: 'offline_fs_kbc' is not supported"),
        ('[kbc]\nname = "cc_kbc"\n', "kbc.url must be an http:// or https:// URL"),
        ('[kbc]\nname = "cc_kbc"\nurl = "http://k"\nkbs_cert = "not a pem"\n', "kbc.kbs_cert is not a PEM certificate"),
        ('[aa]\naa_socket = 5\n', "aa.aa_socket must be str"),
        ('[[credentials]]\nresource_uri = "kbs:///a/b/c"\npath = "/run/x"\n', "'credentials' is an upstream CDH feature"),
    ],
)
def test_bad_config_stops_start_up(tmp_path: Path, config: str, message: str) -> None:
    path = tmp_path / "cdh.toml"
    path.write_text(config)
    result = run_once("confidential-data-hub", "--config", str(path))
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_kbc_params_without_config_stops_start_up() -> None:
    result = run_once("confidential-data-hub", env=guest_env(AA_KBC_PARAMS="cc_kbc::nope"))
    assert result.returncode == 1
    assert "AA_KBC_PARAMS" in result.stderr
