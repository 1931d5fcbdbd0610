"""Step 8 (TEE key certification) of the `tpm` verifier, on evidence a real swtpm produced.

Each case changes one thing a guest (or an attacker assembling evidence)
controls and checks the verifier names it; the happy path checks the
claims. The verifier runs in-process (it is pure); the TPM is a swtpm process.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from attestation_service.core.verifiers.tpm import AkTrust, TpmVerifier

from guest.attesters.tpm import TpmAttester, TpmSettings
from guest.attesters.tpm_keys import TpmKeyPair, key_template, open_esapi
from tests.e2e_tpm.swtpm import Swtpm
from trustee_common.b64 import std_decode, std_encode
from trustee_common.canonical import HashAlgorithm, runtime_data_digest
from trustee_common.errors import EvidenceError, MalformedRequestError
from trustee_common.jose import TeeKeyPair

pytest.importorskip("tpm2_pytss")

NOW = datetime.datetime.now(datetime.UTC)


@dataclasses.dataclass
class Tpm:
    swtpm: Swtpm
    attester: TpmAttester
    verifier: TpmVerifier
    key: TpmKeyPair


@pytest.fixture(scope="module")
def tpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tpm]:
    base = tmp_path_factory.mktemp("tpm-bound-verify")
    swtpm = Swtpm(base / "state", base / "swtpm.log")
    attester = TpmAttester(TpmSettings(swtpm.tcti))
    ak = std_decode(attester.get_evidence(b"")["ak_public"], "ak")
    key = attester.create_tee_key()
    assert isinstance(key, TpmKeyPair)
    yield Tpm(swtpm, attester, TpmVerifier(AkTrust(trusted_aks=frozenset({ak}))), key)
    assert swtpm.stop() in (0, -15)


def runtime(key: TeeKeyPair, nonce: str = "n0nce") -> dict[str, Any]:
    return {"nonce": nonce, "tee-pubkey": key.public_jwk()}


def evidence_for(tpm: Tpm, key: TeeKeyPair, runtime_data: dict[str, Any]) -> dict[str, Any]:
    return tpm.attester.get_evidence_for_key(runtime_data_digest(runtime_data, HashAlgorithm.SHA384), key)


def verify(tpm: Tpm, evidence: dict[str, Any], runtime_data: object) -> dict[str, Any]:
    digest = runtime_data_digest(runtime_data, HashAlgorithm.SHA384) if isinstance(runtime_data, dict) else b"\x01" * 48
    claims: dict[str, Any] = tpm.verifier.evaluate_with_runtime_data(evidence, digest, None, NOW, runtime_data)[0][0]
    return claims


def refused(tpm: Tpm, evidence: dict[str, Any], runtime_data: object, reason: str) -> None:
    with pytest.raises(EvidenceError) as caught:
        verify(tpm, evidence, runtime_data)
    assert caught.value.detail.startswith("step 8 (TEE key certification): "), caught.value.detail
    assert reason in caught.value.detail, caught.value.detail


def custom_key(tpm: Tpm, attributes: int) -> TpmKeyPair:
    """A TPM key of the bound-key template with other objectAttributes."""
    from tpm2_pytss import TPMA_OBJECT
    from tpm2_pytss.tsskey import TSSPrivKey

    template = key_template()
    template.objectAttributes = TPMA_OBJECT(attributes)
    esapi = open_esapi(tpm.swtpm.tcti)
    try:
        return TpmKeyPair(tpm.swtpm.tcti, TSSPrivKey.create(esapi, template))
    finally:
        esapi.close()


def test_a_certified_key_gives_its_name(tpm: Tpm) -> None:
    data = runtime(tpm.key)
    claims = verify(tpm, evidence_for(tpm, tpm.key, data), data)
    assert claims["tee_pubkey_certified"] is True
    assert claims["tee_pubkey_name"] == "000b" + hashlib.sha256(tpm.key.tpmt_public()).hexdigest()


def test_evidence_without_a_certification_stays_valid(tpm: Tpm) -> None:
    data = runtime(TeeKeyPair.generate())
    claims = verify(tpm, tpm.attester.get_evidence(runtime_data_digest(data, HashAlgorithm.SHA384)), data)
    assert claims["tee_pubkey_certified"] is False and "tee_pubkey_name" not in claims
    claims = verify(tpm, tpm.attester.get_evidence(b"\x01" * 48), None)  # raw runtime data
    assert claims["tee_pubkey_certified"] is False


def test_a_certification_for_another_request_is_refused(tpm: Tpm) -> None:
    data = runtime(tpm.key)
    evidence = evidence_for(tpm, tpm.key, data)
    evidence["tee_pubkey_certify"] = evidence_for(tpm, tpm.key, runtime(tpm.key, "other"))["tee_pubkey_certify"]
    refused(tpm, evidence, data, "the certification is not for this request: extraData")


def test_the_public_area_must_be_the_certified_one(tpm: Tpm) -> None:
    other = TpmKeyPair.create(tpm.swtpm.tcti)
    data = runtime(other)
    evidence = evidence_for(tpm, tpm.key, data)  # certifies tpm.key, under this request's nonce
    evidence["tee_pubkey_certify"]["public"] = std_encode(other.tpmt_public())
    refused(tpm, evidence, data, "is not the Name of the given TPMT_PUBLIC")


def test_a_signing_key_is_refused(tpm: Tpm) -> None:
    from tpm2_pytss import TPMA_OBJECT

    key = custom_key(tpm, int(key_template().objectAttributes) | TPMA_OBJECT.SIGN_ENCRYPT)
    data = runtime(key)
    refused(tpm, evidence_for(tpm, key, data), data, "its attributes 0x00060072 has sign")


def test_a_duplicable_key_is_refused(tpm: Tpm) -> None:
    from tpm2_pytss import TPMA_OBJECT

    attributes = int(key_template().objectAttributes) & ~(TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT)
    key = custom_key(tpm, attributes)
    data = runtime(key)
    refused(tpm, evidence_for(tpm, key, data), data, "lacks fixedTPM, fixedParent")


def test_the_tee_pubkey_must_be_the_certified_key(tpm: Tpm) -> None:
    software = runtime(TeeKeyPair.generate("RSA-OAEP-256"))  # the certification of tpm.key bound to a software key's request
    refused(tpm, evidence_for(tpm, tpm.key, software), software, "the certified key's modulus is not the tee-pubkey's")
    ec_data = runtime(TeeKeyPair.generate())
    refused(tpm, evidence_for(tpm, tpm.key, ec_data), ec_data, "the tee-pubkey is kty 'EC'")


def test_a_certification_needs_structured_runtime_data(tpm: Tpm) -> None:
    evidence = tpm.attester.get_evidence_for_key(b"\x01" * 48, tpm.key)
    refused(tpm, evidence, None, "the request has no tee-pubkey in structured runtime data")


def test_a_quote_is_not_a_certification(tpm: Tpm) -> None:
    data = runtime(tpm.key)
    evidence = evidence_for(tpm, tpm.key, data)
    evidence["tee_pubkey_certify"]["attest"] = evidence["tpm_quote"]["message"]
    evidence["tee_pubkey_certify"]["signature"] = evidence["tpm_quote"]["signature"]
    refused(tpm, evidence, data, "is not TPM_ST_ATTEST_CERTIFY (0x8017)")
    evidence = evidence_for(tpm, tpm.key, data)
    evidence["tee_pubkey_certify"]["attest"] = std_encode(std_decode(evidence["tee_pubkey_certify"]["attest"], "a")[:-5])
    refused(tpm, evidence, data, "TPMS_ATTEST certify qualifiedName")


@pytest.mark.parametrize("value", ["x", {"public": "AA==", "attest": "AA=="}, {"public": "!", "attest": "AA==", "signature": "AA=="}])
def test_a_malformed_field_is_a_bad_request(tpm: Tpm, value: object) -> None:
    data = runtime(tpm.key)
    evidence = evidence_for(tpm, tpm.key, data)
    evidence["tee_pubkey_certify"] = value
    with pytest.raises(MalformedRequestError, match="tee_pubkey_certify"):
        verify(tpm, evidence, data)


def test_the_parsers_are_total_on_truncated_and_flipped_bytes(tpm: Tpm) -> None:
    from attestation_service.core.verifiers.tpm.structures import TpmParseError, parse_certify, parse_tpmt_public_rsa

    data = runtime(tpm.key)
    certify = evidence_for(tpm, tpm.key, data)["tee_pubkey_certify"]
    for parse, raw in ((parse_certify, std_decode(certify["attest"], "a")), (parse_tpmt_public_rsa, std_decode(certify["public"], "p"))):
        parse(raw)
        variants = [raw[:n] for n in range(len(raw))] + [raw + b"\0"]
        variants += [raw[:i] + bytes([raw[i] ^ 0xFF]) + raw[i + 1 :] for i in range(len(raw))]
        for variant in variants:
            try:
                parse(variant)
            except TpmParseError:
                pass


def test_trustee_verify_checks_the_certification_given_the_tee_pubkey(tpm: Tpm, tmp_path: Path) -> None:
    """`trustee verify --tee tpm --tee-pubkey JWK` runs step 8 offline; without the key the certification cannot be checked."""
    import json

    from tests.tools.stack import run_tool

    data = runtime(tpm.key)
    evidence = evidence_for(tpm, tpm.key, data)
    files = {"evidence": json.dumps(evidence), "tee-pubkey": json.dumps(data["tee-pubkey"])}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "ak.der").write_bytes(std_decode(evidence["ak_public"], "ak"))
    report_data = runtime_data_digest(data, HashAlgorithm.SHA384).hex()
    base = ("verify", "--tee", "tpm", "--evidence", str(tmp_path / "evidence"), "--trusted-ak", str(tmp_path / "ak.der"),
            "--report-data", report_data, "--json")
    result = run_tool("trustee", *base, "--tee-pubkey", str(tmp_path / "tee-pubkey"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["claims"]["tee_pubkey_certified"] is True
    result = run_tool("trustee", *base)
    assert result.returncode == 1 and "step 8 (TEE key certification)" in result.stdout, result.stdout + result.stderr
    (tmp_path / "bad").write_text("[1]")
    result = run_tool("trustee", *base, "--tee-pubkey", str(tmp_path / "bad"))
    assert result.returncode == 1 and "is not a JWK object" in result.stderr, result.stderr  # as a bad --evidence file
