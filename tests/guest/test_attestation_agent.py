"""The `attestation-agent` process on its own: gRPC API, config and CLI checks.

Two real AAs per module: `plain` (no config file, no KBS) and `configured`
(config with an unreachable KBS, a CoCo AS served by this test, the event
log enabled, the sample device and an init-data file).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from aiohttp import web

from tests.guest.guestprocs import STOP_SIGNALS, GuestProc, aa_stub, guest_env, run_once, start_aa
from tests.procs import free_port
from trustee_pb import attestation_agent_pb2 as pb

INIT_DATA = 'version = "0.1.0"\nalgorithm = "sha256"\n[data]\n"aa.toml" = """\n[log]\nlevel = "debug"\n"""\n'


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("aa")


@pytest.fixture(scope="module")
def plain(tmp: Path) -> Iterator[GuestProc]:
    proc = start_aa(tmp, name="plain")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def as_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def configured(tmp: Path, as_port: int) -> Iterator[GuestProc]:
    config = tmp / "aa.toml"
    config.write_text(
        f'[token_configs.kbs]\nurl = "http://127.0.0.1:{free_port()}"\ntee_key_algorithm = "ECDH-ES+A256KW-P521"\n'
        f'[token_configs.coco_as]\nurl = "http://127.0.0.1:{as_port}/"\n'
        '[eventlog_config]\nenable_eventlog = true\ninit_pcr = 17\n[log]\nlevel = "info"\n'
    )
    init_data = tmp / "initdata.toml"
    init_data.write_text(INIT_DATA)
    proc = start_aa(tmp, "-c", str(config), "-t", str(init_data), env=guest_env(ENABLE_SAMPLE_DEVICE="1"), name="configured")
    yield proc
    proc.stop()


@pytest.fixture
async def channel_to() -> AsyncIterator[list[grpc.aio.Channel]]:
    channels: list[grpc.aio.Channel] = []
    yield channels
    for channel in channels:
        await channel.close()


def stub(channels: list[grpc.aio.Channel], proc: GuestProc) -> object:
    channel = grpc.aio.insecure_channel(proc.addr)
    channels.append(channel)
    return aa_stub(channel)


async def test_get_evidence_uses_runtime_data_unchanged(plain: GuestProc, channel_to: list[grpc.aio.Channel]) -> None:
    data = bytes(range(48)) + b"\xff\x00"
    reply = await stub(channel_to, plain).GetEvidence(pb.GetEvidenceRequest(RuntimeData=data))  # type: ignore[attr-defined]
    assert reply.Evidence == json.dumps({"svn": "1", "report_data": base64.b64encode(data).decode()}, separators=(",", ":")).encode()


async def test_tee_names_and_additional_evidence(plain: GuestProc, configured: GuestProc, channel_to: list[grpc.aio.Channel]) -> None:
    bare, devices = stub(channel_to, plain), stub(channel_to, configured)
    assert (await bare.GetTeeType(pb.GetTeeTypeRequest())).tee == "sample"  # type: ignore[attr-defined]
    assert list((await bare.GetAdditionalTees(pb.GetAdditionalTeesRequest())).additional_tees) == []  # type: ignore[attr-defined]
    assert list((await devices.GetAdditionalTees(pb.GetAdditionalTeesRequest())).additional_tees) == ["sampledevice"]  # type: ignore[attr-defined]
    empty = await bare.GetAdditionalEvidence(pb.GetAdditionalEvidenceRequest(RuntimeData=b"rd"))  # type: ignore[attr-defined]
    assert empty.Evidence == b""
    reply = await devices.GetAdditionalEvidence(pb.GetAdditionalEvidenceRequest(RuntimeData=b"rd"))  # type: ignore[attr-defined]
    assert json.loads(reply.Evidence) == {"sampledevice": {"svn": "2", "report_data": base64.b64encode(b"rd").decode()}}


async def test_get_token_unknown_type_is_invalid_argument(plain: GuestProc, channel_to: list[grpc.aio.Channel]) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub(channel_to, plain).GetToken(pb.GetTokenRequest(TokenType="bogus"))  # type: ignore[attr-defined]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "bogus" in (info.value.details() or "")


async def test_get_token_without_kbs_is_failed_precondition(plain: GuestProc, channel_to: list[grpc.aio.Channel]) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub(channel_to, plain).GetToken(pb.GetTokenRequest(TokenType="kbs"))  # type: ignore[attr-defined]
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "token_configs.kbs" in (info.value.details() or "")


async def test_get_token_with_kbs_down_is_unavailable(configured: GuestProc, channel_to: list[grpc.aio.Channel]) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub(channel_to, configured).GetToken(pb.GetTokenRequest(TokenType="kbs"))  # type: ignore[attr-defined]
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "cannot reach the KBS" in (info.value.details() or "")


async def test_runtime_measurement_not_enabled_is_checked_first(plain: GuestProc, configured: GuestProc,
                                                                channel_to: list[grpc.aio.Channel]) -> None:
    bad_event = pb.ExtendRuntimeMeasurementRequest(Domain="d", Operation="o", Content="two\nlines")
    reply = await stub(channel_to, plain).ExtendRuntimeMeasurement(bad_event)  # type: ignore[attr-defined]
    assert reply.Result == pb.NOT_ENABLED
    event = pb.ExtendRuntimeMeasurementRequest(Domain="github.com/confidential-containers", Operation="PullImage", Content="{}")
    reply = await stub(channel_to, configured).ExtendRuntimeMeasurement(event)  # type: ignore[attr-defined]
    assert reply.Result == pb.NOT_SUPPORTED


async def test_sample_evidence_carries_the_bound_init_data(tmp_path: Path, configured: GuestProc,
                                                            channel_to: list[grpc.aio.Channel]) -> None:
    # The --initdata-toml file was bound at start-up: the evidence carries its digest, as MRCONFIGID does on TDX.
    reply = await stub(channel_to, configured).GetEvidence(pb.GetEvidenceRequest(RuntimeData=b"rd"))  # type: ignore[attr-defined]
    assert json.loads(reply.Evidence)["init_data"] == base64.b64encode(hashlib.sha256(INIT_DATA.encode()).digest()).decode()
    assert "init-data digest bound to the sample platform" in configured.output()

    fresh = start_aa(tmp_path, name="fresh")
    try:
        aa = stub(channel_to, fresh)
        await aa.BindInitData(pb.BindInitDataRequest(Digest=b"\x01" * 32))  # type: ignore[attr-defined]
        await aa.BindInitData(pb.BindInitDataRequest(Digest=b"\x01" * 32))  # type: ignore[attr-defined]  # the same again: fine
        reply = await aa.GetEvidence(pb.GetEvidenceRequest(RuntimeData=b"rd"))  # type: ignore[attr-defined]
        assert json.loads(reply.Evidence) == {"svn": "1", "report_data": base64.b64encode(b"rd").decode(),
                                              "init_data": base64.b64encode(b"\x01" * 32).decode()}
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await aa.BindInitData(pb.BindInitDataRequest(Digest=b"\x02" * 32))  # type: ignore[attr-defined]
        assert "a different init-data digest is already bound" in (refused.value.details() or "")
        reply = await aa.GetEvidence(pb.GetEvidenceRequest(RuntimeData=b"rd"))  # type: ignore[attr-defined]
        assert json.loads(reply.Evidence)["init_data"] == base64.b64encode(b"\x01" * 32).decode()  # unchanged
    finally:
        fresh.stop()


async def test_coco_as_token_posts_evidence_and_returns_the_body(configured: GuestProc, as_port: int,
                                                                 channel_to: list[grpc.aio.Channel]) -> None:
    seen: list[object] = []
    answers = [web.Response(text="the.as.token"), web.Response(status=500, text="policy engine exploded")]

    async def attestation(request: web.Request) -> web.Response:
        seen.append((request.path, await request.json()))
        return answers.pop(0)

    app = web.Application()
    app.router.add_post("/attestation", attestation)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", as_port).start()
    try:
        aa = stub(channel_to, configured)
        reply = await aa.GetToken(pb.GetTokenRequest(TokenType="coco_as"))  # type: ignore[attr-defined]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await aa.GetToken(pb.GetTokenRequest(TokenType="coco_as"))  # type: ignore[attr-defined]
    finally:
        await runner.cleanup()
    assert reply.Token == b"the.as.token"
    bound = base64.b64encode(hashlib.sha256(INIT_DATA.encode()).digest()).decode()  # its --initdata-toml
    evidence = base64.urlsafe_b64encode(f'{{"svn":"1","report_data":"","init_data":"{bound}"}}'.encode()).rstrip(b"=").decode()
    assert seen[0] == ("/attestation", {"verification_requests": [{"tee": "sample", "evidence": evidence}], "policy_ids": []})
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "HTTP 500" in (info.value.details() or "")


@pytest.mark.parametrize("signum", STOP_SIGNALS, ids=lambda s: s.name)
def test_stops_cleanly_on_signal(tmp_path: Path, signum: int) -> None:
    proc = start_aa(tmp_path)
    assert "attester in use: sample" in proc.wait_output(f"attestation-agent listening on 127.0.0.1:{proc.port}")
    assert proc.signal_and_wait(signum) == 0
    assert "attestation-agent stopped" in proc.output()


@pytest.mark.parametrize(
    ("config", "env", "message"),
    [
        ('[token_configs.kbs]\nurl = "http://k"\nsurprise = 1\n', {}, "unknown key(s) in config.token_configs.kbs: surprise"),
        ('[token_configs.kbs]\nurl = "http://k"\ntee_key_algorithm = "RSA1_5"\n', {}, "tee_key_algorithm"),
        ("[eventlog_config]\ninit_pcr = -1\n", {}, "eventlog_config.init_pcr must be >= 0"),
        ('[log]\nlevel = "loud"\n', {}, "log.level"),
        (None, {"AA_KBC_PARAMS": "cc_kbc"}, "AA_KBC_PARAMS"),
        (None, {"AA_KBC_PARAMS": "cc_kbc::ftp://x"}, "http:// or https://"),
    ],
)
def test_bad_config_stops_start_up(tmp_path: Path, config: str | None, env: dict[str, str], message: str) -> None:
    args = ["--attestation_sock", f"127.0.0.1:{free_port()}"]
    if config is not None:
        path = tmp_path / "aa.toml"
        path.write_text(config)
        args += ["--config-file", str(path)]
    result = run_once("attestation-agent", *args, env=guest_env(**env))
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('version = "0.1.0"\nalgorithm = "md5"\n[data]\n', "unsupported algorithm 'md5'"),
        ('version = "0.2.0"\nalgorithm = "sha256"\n[data]\n', "unsupported init-data version"),
        ("not toml at all [", "not a UTF-8 TOML document"),
    ],
)
def test_bad_init_data_stops_start_up(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "initdata.toml"
    path.write_text(text)
    result = run_once("attestation-agent", "-a", f"127.0.0.1:{free_port()}", "-t", str(path))
    assert result.returncode == 1
    assert message in result.stderr


def test_bad_listen_address_is_named() -> None:
    result = run_once("attestation-agent", "--attestation_sock", "localhost")
    assert result.returncode == 1
    assert "--attestation_sock: 'localhost' is not host:port" in result.stderr
