"""SNP verification of the real corpus at its fixed times, and mutations rejected at the right step."""

from __future__ import annotations

import datetime
import hashlib
import json
from dataclasses import replace

import pytest
from attestation_service.core.verifiers.snp import (
    PINNED_ARK_SHA256,
    SnpReportParseError,
    SnpVerificationError,
    SnpVerificationInput,
    SnpVerifier,
    VcekKey,
    amd_roots,
    evaluate_snp_report,
    load_certificates,
    parse_evidence,
    parse_report,
    verify_snp_report,
)
from attestation_service.core.verifiers.snp.certs import decode_hwid, vek_extensions
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding

from tests.snp.corpus import AMD, CASES, CORPUS, GENOA, MILAN, MUTATIONS, SNP, VLEK, VLEK_EXPIRED, Case, at, wire_json
from trustee_common.errors import EvidenceError, MalformedRequestError


def request(case: Case, report: bytes | None = None, **kwargs: object) -> SnpVerificationInput:
    evidence = parse_evidence(case.wire_json)
    certs = evidence.certificates + case.certificates
    return SnpVerificationInput(report if report is not None else case.report, case.now, certs, **kwargs)  # type: ignore[arg-type]


def test_pinned_arks_match_the_corpus() -> None:
    for product, roots in amd_roots().items():
        der = roots.ark.public_bytes(Encoding.DER)
        assert hashlib.sha256(der).hexdigest() == PINNED_ARK_SHA256[product]
        corpus = load_certificates((AMD / f"{product.lower()}_ask_ark_asvk.pem").read_bytes(), product)
        assert der in {c.public_bytes(Encoding.DER) for c in corpus}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_corpus_verdicts(case: Case) -> None:
    result = evaluate_snp_report(request(case))
    if case.rejected_at is None:
        assert result, result.error
        assert result.claims is not None
        assert result.claims["vmpl"] == case.vmpl
        assert [s.outcome for s in result.steps] == ["pass"] * 7 + ["skipped"] * 2
    else:
        assert not result
        assert str(result.error).startswith(case.rejected_at), result.error


def test_vlek_expiry_named() -> None:
    with pytest.raises(SnpVerificationError, match=r"^step 5 \(AMD certificate chain\): SEV-VLEK is not valid at 2026-01-01"):
        verify_snp_report(request(VLEK_EXPIRED))


def test_fake_vceks_are_not_issued_by_amd() -> None:
    for name in ("test-vcek-invalid-legacy.der", "test-vcek-invalid-new.der"):
        fake = load_certificates((SNP / "trustee-invalid-vcek" / name).read_bytes(), name)
        result = evaluate_snp_report(SnpVerificationInput(MILAN.report, MILAN.now, tuple(fake)))
        assert "the VCEK is not signed by SEV-Milan" in str(result.error)


def test_claims_use_upstream_names() -> None:
    claims = verify_snp_report(request(GENOA))
    upstream = {
        "policy_abi_major", "policy_abi_minor", "policy_smt_allowed", "policy_migrate_ma", "policy_debug_allowed",
        "policy_single_socket", "reported_tcb_bootloader", "reported_tcb_tee", "reported_tcb_snp", "reported_tcb_microcode",
        "platform_tsme_enabled", "platform_smt_enabled", "measurement", "report_data", "init_data", "chip_id",
    }
    assert upstream <= set(claims)
    assert claims["reported_tcb_bootloader"] == 10 and claims["reported_tcb_snp"] == 23 and claims["reported_tcb_microcode"] == 25
    assert claims["policy_debug_allowed"] is False and claims["policy_smt_allowed"] is True
    assert len(claims["measurement"]) == 96 and claims["product"] == "Genoa" and claims["signing_key"] == "VCEK"
    vlek = verify_snp_report(request(VLEK))
    assert vlek["vmpl"] == 1 and vlek["signing_key"] == "VLEK" and vlek["chip_id"] == "00" * 64


@pytest.mark.parametrize("name", MUTATIONS)
def test_mutations_rejected_at_the_right_step(name: str) -> None:
    mutate, step = MUTATIONS[name]
    with pytest.raises(EvidenceError) as caught:
        verify_snp_report(request(MILAN, mutate(MILAN.report)))
    assert caught.value.detail.startswith(step), caught.value.detail


def test_wire_json_body_mutation_rejected_at_signature() -> None:
    evidence = GENOA.wire_json
    evidence["attestation_report"]["measurement"][0] ^= 1
    with pytest.raises(SnpVerificationError, match=r"^step 7 \(report signature\)"):
        SnpVerifier().evaluate(evidence, None, None, GENOA.now)


def test_wrong_chain_rejected() -> None:
    genoa_chain = load_certificates((AMD / "genoa_ask_ark_asvk.pem").read_bytes(), "genoa")
    with pytest.raises(SnpVerificationError, match=r"^step 5 \(AMD certificate chain\): ARK-Genoa .* is not the pinned ARK-Milan"):
        verify_snp_report(replace(request(MILAN), certificates=(*request(MILAN).certificates, *genoa_chain)))


def test_vcek_of_another_product_rejected() -> None:
    vcek = request(GENOA).certificates
    vlek_as_vcek = VLEK.report[:0x48] + bytes(4) + VLEK.report[0x4C:]  # a Milan report claiming a VCEK signature
    with pytest.raises(SnpVerificationError, match=r"^step 4 \(product\): the report is from a Milan CPU but the VCEK is for Genoa"):
        verify_snp_report(SnpVerificationInput(vlek_as_vcek, VLEK.now, vcek))


def test_vcek_of_another_chip_rejected() -> None:
    other = load_certificates((CORPUS / "azure" / "az-snp-vtpm" / "vcek.pem").read_bytes(), "azure vcek")
    result = evaluate_snp_report(SnpVerificationInput(MILAN.report, MILAN.now, tuple(other)))
    assert [s.outcome for s in result.steps][:5] == ["pass"] * 5  # a genuine Milan VCEK, same TCB
    assert str(result.error).startswith("step 6 (key extensions): VCEK hwID 19752a447db501a3... does not equal chip_id d49554ec717f4e5b")


def test_wrong_report_data_rejected() -> None:
    with pytest.raises(SnpVerificationError, match=r"^step 8 \(report data binding\)"):
        verify_snp_report(request(MILAN, report_data=b"\x01" * 64))


def test_report_data_and_init_data_bindings() -> None:
    report = parse_report(MILAN.report)
    claims = verify_snp_report(request(MILAN, report_data=report.report_data, init_data_hash=bytes(48)))  # sha384: truncated
    assert claims["report_data"] == report.report_data.hex()
    assert claims["init_data"] == "00" * 32
    with pytest.raises(SnpVerificationError, match=r"^step 9 \(init data binding\)"):
        verify_snp_report(request(MILAN, init_data_hash=b"\x01" * 32))


def test_before_the_vcek_is_valid() -> None:
    with pytest.raises(SnpVerificationError, match=r"^step 5 .*SEV-VCEK is not valid at 2023-01-01"):
        verify_snp_report(replace(request(MILAN), now=at("2023-01-01T00:00:00Z")))


def test_signed_vek_is_remembered_but_times_and_forgeries_are_checked_on_every_report() -> None:
    """The VEK's signature by its ASK is checked once per VEK (SIGNED_LINKS); a later report signed by the same VEK
    still has the chain's validity checked against its own time, and a VEK that fails is checked anew each time."""
    from attestation_service.core.verifiers.snp.certs import SIGNED_LINKS

    SIGNED_LINKS.clear()
    verify_snp_report(request(MILAN))
    hits, size = SIGNED_LINKS.hits, len(SIGNED_LINKS)
    verify_snp_report(request(MILAN))
    assert SIGNED_LINKS.hits == hits + 1 and len(SIGNED_LINKS) == size == 1
    with pytest.raises(SnpVerificationError, match=r"^step 5 .*SEV-VCEK is not valid at 2023-01-01"):
        verify_snp_report(replace(request(MILAN), now=at("2023-01-01T00:00:00Z")))
    fake = load_certificates((SNP / "trustee-invalid-vcek" / "test-vcek-invalid-new.der").read_bytes(), "fake")
    for _ in range(2):
        result = evaluate_snp_report(SnpVerificationInput(MILAN.report, MILAN.now, tuple(fake)))
        assert "the VCEK is not signed by SEV-Milan" in str(result.error)
    assert len(SIGNED_LINKS) == 1


def test_no_vcek() -> None:
    with pytest.raises(SnpVerificationError, match=r"^step 3 \(endorsement key\): no VCEK certificate"):
        verify_snp_report(SnpVerificationInput(MILAN.report, MILAN.now))


def test_naive_time_rejected() -> None:
    with pytest.raises(SnpVerificationError, match=r"^step 2"):
        verify_snp_report(replace(request(MILAN), now=datetime.datetime(2025, 1, 1)))


def _fake_crl(issuer: x509.Name, revoked_serial: int | None) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    builder = x509.CertificateRevocationListBuilder().issuer_name(issuer)
    builder = builder.last_update(at("2024-01-01T00:00:00Z")).next_update(at("2030-01-01T00:00:00Z"))
    if revoked_serial is not None:
        entry = x509.RevokedCertificateBuilder().serial_number(revoked_serial).revocation_date(at("2024-01-01T00:00:00Z")).build()
        builder = builder.add_revoked_certificate(entry)
    return builder.sign(key, hashes.SHA384()).public_bytes(Encoding.DER)


def test_crl_not_signed_by_the_ark_rejected() -> None:
    ark = amd_roots()["Milan"].ark
    with pytest.raises(SnpVerificationError, match=r"^step 5 .*a CRL naming ARK-Milan as issuer is not signed by it"):
        verify_snp_report(request(MILAN, crls=(_fake_crl(ark.subject, None),)))


def test_crl_of_another_issuer_is_ignored() -> None:
    other = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "ARK-Genoa")])
    result = evaluate_snp_report(request(MILAN, crls=(_fake_crl(other, amd_roots()["Milan"].ask.serial_number),)))
    assert result, result.error
    assert "no CRL given" in result.steps[4].detail


def test_garbage_crl_rejected() -> None:
    with pytest.raises(SnpVerificationError, match=r"^step 5 .*not a DER or PEM CRL"):
        verify_snp_report(request(MILAN, crls=(b"not a crl",)))


def test_hwid_encodings() -> None:
    legacy = load_certificates((SNP / "trustee-invalid-vcek" / "test-vcek-invalid-legacy.der").read_bytes(), "l")[0]
    new = load_certificates((SNP / "trustee-invalid-vcek" / "test-vcek-invalid-new.der").read_bytes(), "n")[0]
    assert vek_extensions(legacy).hwid == vek_extensions(new).hwid == bytes(range(64))
    assert decode_hwid(bytes(range(8))) == bytes(range(8))  # Turin: 8 raw bytes
    assert decode_hwid(b"\x04\x08" + bytes(range(8))) == bytes(range(8))  # Turin, DER-wrapped
    with pytest.raises(EvidenceError):
        decode_hwid(b"\x04\x09" + bytes(8))


def test_turin_kds_path_uses_8_byte_hwid_and_fmc() -> None:
    key = VcekKey("Turin", bytes(range(64)), 1, 2, 3, 4, fmc=5)
    assert key.kds_path("Turin") == "vcek/v1/Turin/0001020304050607?blSPL=1&teeSPL=2&snpSPL=3&ucodeSPL=4&fmcSPL=5"
    milan = VcekKey.of(parse_report(MILAN.report))
    assert milan.product is None and milan.products() == ("Milan", "Genoa", "Turin")  # v2: no CPUID
    assert milan.kds_path("Milan").endswith("?blSPL=3&teeSPL=0&snpSPL=8&ucodeSPL=115")


def test_as_verifier_uses_the_lookup_when_the_evidence_has_no_vcek() -> None:
    vcek = (SNP / "virtee-milan" / "vcek.der").read_bytes()
    asked: list[VcekKey] = []

    def lookup(key: VcekKey) -> bytes | None:
        asked.append(key)
        return vcek

    evidence = wire_json(MILAN.report)
    [(claims, tee_class)] = SnpVerifier(lookup).evaluate(evidence, None, None, MILAN.now)
    assert tee_class == "cpu" and claims["product"] == "Milan" and len(asked) == 1
    with pytest.raises(SnpVerificationError, match=r"^step 3"):
        SnpVerifier().evaluate(evidence, None, None, MILAN.now)


@pytest.mark.parametrize(
    ("evidence", "error"),
    [
        ([], MalformedRequestError),
        ({}, MalformedRequestError),
        ({"attestation_report": {}}, SnpReportParseError),
        ({"attestation_report": "AAAA"}, SnpReportParseError),
        ({**GENOA.wire_json, "cert_chain": "x"}, MalformedRequestError),
        ({**GENOA.wire_json, "cert_chain": [{"cert_type": "VCEK", "data": [256]}]}, MalformedRequestError),
        ({**GENOA.wire_json, "cert_chain": [{"cert_type": "VCEK", "data": [1, 2]}]}, SnpVerificationError),
    ],
)
def test_malformed_evidence(evidence: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        SnpVerifier().evaluate(json.loads(json.dumps(evidence)), None, None, GENOA.now)
