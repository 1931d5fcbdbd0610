"""TPM-bound TEE keys end to end: two swtpm processes, `trustee run`, `trustee guest` and the guest library.

Both swtpms' AKs are registered as `trusted_aks`, and the resource policy is
the snippet of docs/tpm-bound-keys.md (release only to a certified TEE key).
A guest on TPM A (`trustee guest`, real processes) gets the secret through
its REST API: its AA made the key in TPM A, certified it with A's AK, and
its CDH unwrapped the JWE's CEK with TPM2_RSA_Decrypt. The same JWE, fetched
with the guest library, cannot be opened by TPM B (neither with the key's
blob, which B cannot load, nor with a key of B's own). Evidence whose
certification is by another (even trusted) AK, or certifies a key other
than the tee-pubkey, is refused by the AS. A guest that sends no certified
key (`AA_TPM_BOUND_KEY=0`) attests, but the policy denies it the resource.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e_tpm.swtpm import Swtpm
from tests.e2e_tpm.test_e2e_tpm import admin, curl, ear_status, register
from tests.procs import Proc, script
from tests.tools.stack import TrusteeRun, clean_env, free_ports

pytest.importorskip("tpm2_pytss")
pytestmark = pytest.mark.e2e

from guest.attesters.tpm import TpmAttester, TpmSettings  # noqa: E402 - after the importorskip
from guest.attesters.tpm_keys import TpmKeyPair  # noqa: E402
from guest.kbs_protocol import AttesterEvidence, KbsClient  # noqa: E402
from trustee_common.errors import TrusteeError  # noqa: E402
from trustee_common.jose import JweError, TeeKeyPair  # noqa: E402

SECRET = b"tpm-bound secret \x00\x01"
RESOURCE = "default/tpm-bound/secret"
POLICY = """package policy
import rego.v1

default allow := false

allow if {
    data.plugin == "resource"
    appraisal := input.submods.cpu0
    appraisal["ear.status"] != "contraindicated"
    appraisal["ear.veraison.annotated-evidence"].tpm.tee_pubkey_certified == true
}
"""


@dataclass
class Stack:
    tpm_a: Swtpm
    tpm_b: Swtpm
    server: TrusteeRun
    workdir: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("e2e-tpm-bound")
    started: list[Any] = []
    try:
        started.append(Swtpm(base / "swtpm-a", base / "swtpm-a.log"))
        started.append(Swtpm(base / "swtpm-b", base / "swtpm-b.log"))
        started.append(TrusteeRun(base / "trustee-data", base / "trustee.log"))
    except BaseException:
        for proc in reversed(started):
            proc.stop()
        raise
    stack = Stack(started[0], started[1], started[2], base)
    aks = [TpmAttester(TpmSettings(t.tcti)).get_evidence(b"")["ak_public"] for t in (stack.tpm_a, stack.tpm_b)]
    register(stack, {"trusted_aks": aks})  # type: ignore[arg-type]  # the helper reads .workdir / .server only
    secret, policy = base / "secret.bin", base / "policy.rego"
    secret.write_bytes(SECRET)
    policy.write_text(POLICY)
    admin(stack, "set-resource", "--path", RESOURCE, "--resource-file", str(secret))  # type: ignore[arg-type]
    admin(stack, "set-resource-policy", "--policy-file", str(policy))  # type: ignore[arg-type]
    yield stack
    stack.server.stop()
    for tpm in (stack.tpm_a, stack.tpm_b):
        assert tpm.stop() in (0, -15)


def start_guest(stack: Stack, name: str, **env: str) -> tuple[Proc, str]:
    rest, aa, cdh = free_ports(3)
    guest = Proc([script("trustee"), "guest", "--kbs-url", stack.server.url, "--rest-port", str(rest), "--aa-port", str(aa),
                  "--cdh-port", str(cdh), "--data-dir", str(stack.workdir / name)],
                 stack.workdir / f"{name}.log", port=rest, env=clean_env(AA_TPM_TCTI=stack.tpm_a.tcti, **env), timeout=120)
    return guest, f"http://127.0.0.1:{rest}"


async def fetch_envelope(stack: Stack, evidence: AttesterEvidence, key_pair: TeeKeyPair) -> tuple[int, Any]:
    """Attest with the guest library, then GET the resource with the token (passport mode) without opening it."""
    async with KbsClient(stack.server.url, evidence=evidence, key_pair=key_pair) as client:
        token = await client.attest()
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{stack.server.url}/kbs/v0/resource/{RESOURCE}", headers={"Authorization": f"Bearer {token}"}) as reply,
    ):
        return reply.status, await reply.json(content_type=None)


def kbs_log(stack: Stack) -> str:
    return (stack.server.data_dir / "logs" / "kbs.log").read_text(errors="replace")


def test_guest_gets_the_secret_through_its_tpm(stack: Stack, tmp_path: Path) -> None:
    guest, rest_url = start_guest(stack, "bound")
    try:
        out = tmp_path / "secret"
        assert curl(f"{rest_url}/cdh/resource/{RESOURCE}", out) == 200, (out.read_bytes(), guest.output()[-2000:])
        assert out.read_bytes() == SECRET
        annotated = ear_status(rest_url, tmp_path / "token")["ear.veraison.annotated-evidence"]
        assert annotated["tpm"]["tee_pubkey_certified"] is True
        assert len(annotated["tpm"]["tee_pubkey_name"]) == 68  # SHA-256 nameAlg (4 hex) + digest
        assert annotated["runtime_data_claims"]["tee-pubkey"]["alg"] == "RSA-OAEP-256"
    finally:
        guest.stop()


def test_the_jwe_opens_only_in_the_first_tpm(stack: Stack) -> None:
    attester = TpmAttester(TpmSettings(stack.tpm_a.tcti))
    evidence = AttesterEvidence(attester)
    key = evidence.new_key_pair("ECDH-ES+A256KW-P256")
    assert isinstance(key, TpmKeyPair)
    status, envelope = asyncio.run(fetch_envelope(stack, evidence, key))
    assert status == 200, envelope
    assert json.loads(base64.urlsafe_b64decode(envelope["protected"] + "=="))["alg"] == "RSA-OAEP-256"
    assert key.decrypt(envelope) == SECRET

    # The key's blob (TSS2 PEM) is wrapped by TPM A's storage key: TPM B cannot load it.
    moved = TpmKeyPair.from_pem(key.to_pem(), tcti=stack.tpm_b.tcti)
    with pytest.raises(JweError, match="TPM refused"):
        moved.decrypt(envelope)
    # Nor can any key of TPM B's own unwrap the CEK.
    with pytest.raises(JweError):
        TpmKeyPair.create(stack.tpm_b.tcti).decrypt(envelope)


class SplicedEvidence:
    """TPM A's quote with the `tee_pubkey_certify` of another attester and key: what an attacker could assemble."""

    tee = "tpm"

    def __init__(self, quoting: TpmAttester, certifying: TpmAttester, tee_key: TpmKeyPair, certified: TpmKeyPair) -> None:
        self.quoting = quoting
        self.certifying = certifying
        self.tee_key = tee_key
        self.certified = certified

    def create_tee_key(self) -> TeeKeyPair | None:
        return self.tee_key

    def get_evidence_for_key(self, report_data: bytes, key_pair: TeeKeyPair | None) -> dict[str, Any]:
        evidence = self.quoting.get_evidence(report_data)
        evidence["tee_pubkey_certify"] = self.certifying.get_evidence_for_key(report_data, self.certified)["tee_pubkey_certify"]
        return evidence

    def get_evidence(self, report_data: bytes) -> dict[str, Any]:
        return self.get_evidence_for_key(report_data, self.tee_key)


def refused(stack: Stack, attester: SplicedEvidence) -> str:
    evidence = AttesterEvidence(attester)
    with pytest.raises(TrusteeError) as caught:
        asyncio.run(fetch_envelope(stack, evidence, evidence.new_key_pair("RSA-OAEP-256")))
    return caught.value.detail


def test_a_certification_by_another_ak_is_refused(stack: Stack) -> None:
    tpm_a, tpm_b = TpmAttester(TpmSettings(stack.tpm_a.tcti)), TpmAttester(TpmSettings(stack.tpm_b.tcti))
    key_b = TpmKeyPair.create(stack.tpm_b.tcti)
    # A quote by A's AK, a key in TPM B certified by B's AK (itself trusted): not the quote's AK.
    detail = refused(stack, SplicedEvidence(tpm_a, tpm_b, key_b, key_b))
    assert "step 8 (TEE key certification): the certification is not by the trusted AK" in kbs_log(stack), detail


def test_a_certification_of_another_key_is_refused(stack: Stack) -> None:
    tpm_a = TpmAttester(TpmSettings(stack.tpm_a.tcti))
    sent, certified = TpmKeyPair.create(stack.tpm_a.tcti), TpmKeyPair.create(stack.tpm_a.tcti)
    detail = refused(stack, SplicedEvidence(tpm_a, tpm_a, sent, certified))
    assert "step 8 (TEE key certification): the certified key's modulus is not the tee-pubkey's" in kbs_log(stack), detail


def test_the_policy_denies_a_guest_without_a_certified_key(stack: Stack, tmp_path: Path) -> None:
    guest, rest_url = start_guest(stack, "unbound", AA_TPM_BOUND_KEY="0")
    try:
        out = tmp_path / "denied"
        assert curl(f"{rest_url}/cdh/resource/{RESOURCE}", out) == 403, (out.read_bytes(), guest.output()[-2000:])
        assert SECRET not in out.read_bytes()
        annotated = ear_status(rest_url, tmp_path / "token")["ear.veraison.annotated-evidence"]
        assert annotated["tpm"]["tee_pubkey_certified"] is False
        assert annotated["runtime_data_claims"]["tee-pubkey"]["kty"] == "EC"
    finally:
        guest.stop()
