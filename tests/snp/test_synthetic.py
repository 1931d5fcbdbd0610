"""Turin layout, v5 reports and CRL revocation against a synthetic AMD chain (see tests/snp/synthetic.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from attestation_service.core.verifiers.snp import SnpVerificationError, SnpVerificationInput, evaluate_snp_report, verify_snp_report
from attestation_service.core.verifiers.snp import verify as verify_module
from attestation_service.core.verifiers.snp.certs import AmdRoots

from tests.snp.synthetic import CHIP_ID, NOW, SyntheticChain, turin_chain

TURIN_TCB = bytes([1, 2, 3, 4, 0, 0, 0, 5])  # fmc 1, bl 2, tee 3, snp 4, ucode 5


@pytest.fixture(scope="module")
def chain() -> SyntheticChain:
    return turin_chain()


@pytest.fixture(autouse=True)
def synthetic_roots(chain: SyntheticChain, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    roots: dict[str, AmdRoots] = {"Turin": chain.roots}
    monkeypatch.setattr(verify_module, "amd_roots", lambda: roots)
    yield


def test_turin_v5_report_verifies(chain: SyntheticChain) -> None:
    claims = verify_snp_report(SnpVerificationInput(chain.report(tcb=TURIN_TCB), NOW, (chain.vcek,)))
    assert claims["product"] == "Turin" and claims["version"] == 5
    assert (claims["reported_tcb_fmc"], claims["reported_tcb_bootloader"], claims["reported_tcb_microcode"]) == (1, 2, 5)
    assert claims["launch_mit_vector"] == 3
    assert claims["chip_id"] == CHIP_ID.hex()


def test_fmc_spl_must_equal_reported_tcb(chain: SyntheticChain) -> None:
    report = chain.report(tcb=bytes([9, 2, 3, 4, 0, 0, 0, 5]))
    with pytest.raises(SnpVerificationError, match=r"^step 6 \(key extensions\): VCEK fmcSPL 1 does not equal reported_tcb 9"):
        verify_snp_report(SnpVerificationInput(report, NOW, (chain.vcek,)))


def test_turin_hwid_is_the_first_8_bytes_of_chip_id(chain: SyntheticChain) -> None:
    wrapped = chain.issue_vcek((2, 3, 4, 5, 1), b"\x04\x08" + CHIP_ID[:8])  # DER-wrapped 8-byte hwID
    verify_snp_report(SnpVerificationInput(wrapped.report(tcb=TURIN_TCB), NOW, (wrapped.vcek,)))
    other = chain.issue_vcek((2, 3, 4, 5, 1), bytes(8))
    with pytest.raises(SnpVerificationError, match=r"^step 6 \(key extensions\): VCEK hwID 0{16}\.\.\. does not equal chip_id 0102"):
        verify_snp_report(SnpVerificationInput(other.report(tcb=TURIN_TCB), NOW, (other.vcek,)))


def test_key_of_another_vcek_fails_the_signature(chain: SyntheticChain) -> None:
    twin = chain.issue_vcek((2, 3, 4, 5, 1), CHIP_ID[:8])  # same chip and TCB, another key
    with pytest.raises(SnpVerificationError, match=r"^step 7 \(report signature\)"):
        verify_snp_report(SnpVerificationInput(chain.report(tcb=TURIN_TCB), NOW, (twin.vcek,)))


def test_crl_revoking_the_ask(chain: SyntheticChain) -> None:
    request = SnpVerificationInput(chain.report(tcb=TURIN_TCB), NOW, (chain.vcek,), crls=(chain.crl([0x1234]),))
    with pytest.raises(SnpVerificationError, match=r"^step 5 \(AMD certificate chain\): SEV-Turin \(serial 1234\) is revoked"):
        verify_snp_report(request)


def test_crl_not_revoking_the_ask(chain: SyntheticChain) -> None:
    request = SnpVerificationInput(chain.report(tcb=TURIN_TCB), NOW, (chain.vcek,), crls=(chain.crl([7]),))
    result = evaluate_snp_report(request)
    assert result, result.error
    assert "SEV-Turin not revoked by 1 CRL(s)" in result.steps[4].detail


def test_forged_intermediate_in_the_evidence(chain: SyntheticChain) -> None:
    forged = turin_chain()  # its SEV-Turin is signed by another key calling itself ARK-Turin
    request = SnpVerificationInput(chain.report(tcb=TURIN_TCB), NOW, (chain.vcek, forged.roots.ask))
    with pytest.raises(SnpVerificationError, match=r"^step 5 \(AMD certificate chain\): SEV-Turin is not signed by ARK-Turin"):
        verify_snp_report(request)


def test_vmpl_and_versions_are_reported_not_judged(chain: SyntheticChain) -> None:
    for version in (3, 4, 5):
        claims = verify_snp_report(SnpVerificationInput(chain.report(version=version, tcb=TURIN_TCB, vmpl=2), NOW, (chain.vcek,)))
        assert (claims["version"], claims["vmpl"]) == (version, 2)
