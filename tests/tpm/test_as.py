"""The `tpm`, `az-snp-vtpm` and `az-tdx-vtpm` verifiers behind a real `grpc-as`."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.procs import Proc, free_port, script
from tests.tpm.corpus import AZ_REPORT_DATA, AZ_SNP_EVIDENCE, AZ_TDX_EVIDENCE, az_as_v0, load, tpm_evidence
from trustee_common.b64 import url_encode
from trustee_pb import attestation_pb2 as pb
from trustee_pb import attestation_pb2_grpc, reference_pb2, reference_pb2_grpc


@pytest.fixture(scope="module")
def default_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A grpc-as with no `[verifier_config.tpm_verifier]` (what `trustee run` starts), built-in RVPS on its port."""
    directory: Path = tmp_path_factory.mktemp("as-tpm-default")
    config = directory / "as.toml"
    config.write_text(f'[storage_backend]\n[storage_backend.backends.sqlite]\npath = "{directory / "as.sqlite3"}"\n')
    port = free_port()
    proc = Proc([script("grpc-as"), "--config-file", str(config), "--socket", f"127.0.0.1:{port}"], directory / "as.log", port=port)
    try:
        yield port
    finally:
        assert proc.stop() == 0


def sample_message(values: dict[str, object]) -> reference_pb2.ReferenceValueRegisterRequest:
    payload = base64.b64encode(json.dumps(values).encode()).decode()
    return reference_pb2.ReferenceValueRegisterRequest(message=json.dumps({"version": "0.1.0", "type": "sample", "payload": payload}))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    directory: Path = tmp_path_factory.mktemp("as-tpm")
    ak = directory / "ak.der"
    ak.write_bytes(base64.b64decode(tpm_evidence()["ak_public"]))
    config = directory / "as.toml"
    config.write_text(
        f'[storage_backend]\n[storage_backend.backends.sqlite]\npath = "{directory / "as.sqlite3"}"\n'
        '[verifier_config.tpm_verifier]\ntrusted_aks = ["ak.der"]\n'
    )
    port = free_port()
    proc = Proc([script("grpc-as"), "--config-file", str(config), "--socket", f"127.0.0.1:{port}"], directory / "as.log", port=port)
    try:
        yield port
    finally:
        assert proc.stop() == 0


@pytest.fixture
async def stub(server: int) -> AsyncIterator[attestation_pb2_grpc.AttestationServiceAsyncStub]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server}")
    try:
        yield attestation_pb2_grpc.AttestationServiceStub(channel)
    finally:
        await channel.close()


def request(tee: str, evidence: dict[str, Any], **extra: str) -> pb.AttestationRequest:
    item = pb.IndividualAttestationRequest(tee=tee, evidence=url_encode(json.dumps(evidence).encode()), **extra)
    return pb.AttestationRequest(verification_requests=[item], policy_ids=["default"])


def annotated(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    submod: dict[str, Any] = claims["submods"]["cpu0"]
    return submod


async def test_tpm_corpus(stub: attestation_pb2_grpc.AttestationServiceAsyncStub) -> None:
    response = await stub.AttestationEvaluate(request("tpm", tpm_evidence()))
    submod = annotated(response.attestation_token)
    evidence = submod["ear.veraison.annotated-evidence"]
    assert evidence["tpm"]["ak_trust"] == {"method": "reference_value", "source": "verifier_config"}
    assert evidence["tpm"]["pcr11"] == "00" * 32
    # default policy: hardware 2, configuration 0, executables needs tpm_pcr11 and trusted_aks reference values
    assert submod["ear.trustworthiness-vector"]["hardware"] == 2
    # executables 33 without those reference values: the "warning" tier (hardware is unconditionally 2 for tpm)
    assert submod["ear.trustworthiness-vector"]["executables"] == 33
    assert submod["ear.status"] == "warning"


AZURE = [(tee, path, layout) for tee, path in (("az-snp-vtpm", AZ_SNP_EVIDENCE), ("az-tdx-vtpm", AZ_TDX_EVIDENCE))
         for layout in ("v1", "v0")]


@pytest.mark.parametrize(("tee", "path", "layout"), AZURE, ids=[f"{t}-{v}" for t, _, v in AZURE])
async def test_azure_corpus(stub: attestation_pb2_grpc.AttestationServiceAsyncStub, tee: str, path: Path, layout: str) -> None:
    # v0: the same capture in the older layout without `version` (tests/tpm/test_azure_formats.py)
    evidence = load(path) if layout == "v1" else az_as_v0(load(path), tee)
    response = await stub.AttestationEvaluate(request(tee, evidence, raw_runtime_data=url_encode(AZ_REPORT_DATA)))
    submod = annotated(response.attestation_token)
    evidence = submod["ear.veraison.annotated-evidence"]
    assert evidence["report_data"] == AZ_REPORT_DATA.hex()
    assert len(evidence[tee]["tpm"]["pcr11"]) == 64
    # No TCB reference values (az-snp-vtpm) / no collateral, so no tcb_status (az-tdx-vtpm): the hardware is
    # not appraised as genuine and the default resource policy refuses the contraindicated appraisal.
    assert submod["ear.trustworthiness-vector"]["hardware"] == 97
    assert submod["ear.status"] == "contraindicated"


async def test_wrong_nonce_denied(stub: attestation_pb2_grpc.AttestationServiceAsyncStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.AttestationEvaluate(request("az-snp-vtpm", load(AZ_SNP_EVIDENCE), raw_runtime_data=url_encode(b"other")))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "step 8 (report data binding)" in (caught.value.details() or "")


async def test_untrusted_ak_denied(stub: attestation_pb2_grpc.AttestationServiceAsyncStub) -> None:
    evidence = tpm_evidence()
    key = base64.b64decode(evidence["ak_public"])
    evidence["ak_public"] = base64.b64encode(key[:-3] + bytes([key[-3] ^ 2]) + key[-2:]).decode()  # another modulus
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.AttestationEvaluate(request("tpm", evidence))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "step 2 (AK trust)" in (caught.value.details() or "")


async def test_default_as_refuses_an_unregistered_ak_until_it_is_a_trusted_aks_reference_value(default_server: int) -> None:
    # Before issue 9 this AS accepted any AK ("ak_trust": {"method": "policy"}) with a "warning" EAR.
    evidence = tpm_evidence()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{default_server}")
    try:
        stub = attestation_pb2_grpc.AttestationServiceStub(channel)
        rvps = reference_pb2_grpc.ReferenceValueProviderServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.AttestationEvaluate(request("tpm", evidence))
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "step 2 (AK trust): TPM AK not trusted: no trusted_aks reference value is registered; no trusted AK is configured; " \
            "no EK/AK CA is configured ([verifier_config.tpm_verifier] trusted_aks / ak_ca_certs)" in (caught.value.details() or "")

        await rvps.RegisterReferenceValue(sample_message({"trusted_aks": [evidence["ak_public"]]}))
        submod = annotated((await stub.AttestationEvaluate(request("tpm", evidence))).attestation_token)
        assert submod["ear.veraison.annotated-evidence"]["tpm"]["ak_trust"] == {"method": "reference_value", "source": "rvps"}
        assert submod["ear.trustworthiness-vector"]["hardware"] == 2

        await rvps.DeleteReferenceValue(reference_pb2.ReferenceValueDeleteRequest(reference_value_id="trusted_aks"))
        with pytest.raises(grpc.aio.AioRpcError) as again:
            await stub.AttestationEvaluate(request("tpm", evidence))
        assert again.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await channel.close()
