"""DCAP collateral: the `QuoteCollateralV3` bundle, its verification (step 3) and the pinned Intel root.

`verify_collateral` checks every signature of one bundle (root CRL, PCK
CRL, TCB Info, QE identity and their issuer chains up to the pinned Intel
SGX Root CA) and returns a `VerifiedCollateral` that also knows its time
window. Signatures do not depend on `now`, so `CollateralVerifier` caches
the result by the bundle's content digest; the per-quote path only compares
`now` with the precomputed window.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
from collections import OrderedDict
from dataclasses import dataclass
from importlib import resources
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from attestation_service.core.verifiers.tdx.tcb import (
    CollateralError,
    QeIdentity,
    TcbInfo,
    parse_qe_identity,
    parse_tcb_info,
)

ROOT_CA_SHA256 = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
ROOT_CA_RESOURCE = "intel-sgx-root-ca.der"
#: Verified bundles kept in memory (one per FMSPC and CA type in practice).
MAX_CACHED_COLLATERAL = 64
CA_TYPES = ("platform", "processor")


def load_root_ca() -> x509.Certificate:
    """The Intel SGX Root CA shipped with the package, checked against the pinned fingerprint."""
    der = resources.files(__package__).joinpath(ROOT_CA_RESOURCE).read_bytes()
    if hashlib.sha256(der).hexdigest() != ROOT_CA_SHA256:
        raise CollateralError("the shipped Intel SGX Root CA does not match the pinned SHA-256 fingerprint")
    return x509.load_der_x509_certificate(der)


def ecdsa_raw_verify(key: object, signature: bytes, data: bytes) -> bool:
    """P-256 ECDSA-SHA256 with a raw big-endian r||s signature."""
    if not isinstance(key, ec.EllipticCurvePublicKey) or len(signature) != 64:
        return False
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        key.verify(der, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def load_pem_chain(pem: bytes, where: str) -> list[x509.Certificate]:
    try:
        chain = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise CollateralError(f"{where}: not a PEM certificate chain") from None
    if not chain:
        raise CollateralError(f"{where}: empty certificate chain")
    return chain


def same_cert(a: x509.Certificate, b: x509.Certificate) -> bool:
    return hmac.compare_digest(a.fingerprint(hashes.SHA256()), b.fingerprint(hashes.SHA256()))


def ca_type_of(name: x509.Name) -> str | None:
    """`platform` or `processor` from a PCK CA's common name."""
    text = " ".join(str(a.value) for a in name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)).lower()
    return next((kind for kind in CA_TYPES if kind in text), None)


@dataclass(frozen=True, slots=True)
class TdxCollateral:
    """One `QuoteCollateralV3` bundle, as loaded (nothing verified yet)."""

    pck_crl_issuer_chain: bytes
    root_ca_crl: bytes
    pck_crl: bytes
    tcb_info_issuer_chain: bytes
    tcb_info: bytes
    tcb_info_signature: bytes
    qe_identity_issuer_chain: bytes
    qe_identity: bytes
    qe_identity_signature: bytes

    @classmethod
    def from_json(cls, data: object) -> TdxCollateral:
        if not isinstance(data, dict):
            raise CollateralError("collateral: not a JSON object")

        def text(key: str) -> str:
            value = data.get(key)
            if not isinstance(value, str) or not value:
                raise CollateralError(f"collateral.{key}: missing or not a string")
            return value

        def hexa(key: str) -> bytes:
            try:
                return bytes.fromhex(text(key))
            except ValueError:
                raise CollateralError(f"collateral.{key}: not hex") from None

        return cls(
            pck_crl_issuer_chain=text("pck_crl_issuer_chain").encode(),
            root_ca_crl=hexa("root_ca_crl"),
            pck_crl=hexa("pck_crl"),
            tcb_info_issuer_chain=text("tcb_info_issuer_chain").encode(),
            tcb_info=text("tcb_info").encode(),
            tcb_info_signature=hexa("tcb_info_signature"),
            qe_identity_issuer_chain=text("qe_identity_issuer_chain").encode(),
            qe_identity=text("qe_identity").encode(),
            qe_identity_signature=hexa("qe_identity_signature"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "pck_crl_issuer_chain": self.pck_crl_issuer_chain.decode(),
            "root_ca_crl": self.root_ca_crl.hex(),
            "pck_crl": self.pck_crl.hex(),
            "tcb_info_issuer_chain": self.tcb_info_issuer_chain.decode(),
            "tcb_info": self.tcb_info.decode(),
            "tcb_info_signature": self.tcb_info_signature.hex(),
            "qe_identity_issuer_chain": self.qe_identity_issuer_chain.decode(),
            "qe_identity": self.qe_identity.decode(),
            "qe_identity_signature": self.qe_identity_signature.hex(),
        }

    def digest(self) -> bytes:
        hasher = hashlib.sha256()
        for part in (self.pck_crl_issuer_chain, self.root_ca_crl, self.pck_crl, self.tcb_info_issuer_chain, self.tcb_info,
                     self.tcb_info_signature, self.qe_identity_issuer_chain, self.qe_identity, self.qe_identity_signature):
            hasher.update(len(part).to_bytes(8, "big") + part)
        return hasher.digest()

    def key(self) -> tuple[str, str]:
        """(lower-case hex FMSPC, CA type) this bundle serves, read without verifying anything."""
        info = parse_tcb_info(self.tcb_info)
        chain = load_pem_chain(self.pck_crl_issuer_chain, "collateral.pck_crl_issuer_chain")
        kind = ca_type_of(chain[0].subject)
        if kind is None:
            raise CollateralError("collateral.pck_crl_issuer_chain: the CRL issuer is neither the Platform nor the Processor CA")
        return info.fmspc.hex(), kind


@dataclass(frozen=True, slots=True)
class VerifiedCollateral:
    """A bundle whose signatures all verified; `window` is when every part of it is current."""

    digest: bytes
    root: x509.Certificate
    root_crl: x509.CertificateRevocationList
    pck_crl: x509.CertificateRevocationList
    pck_crl_issuer: x509.Certificate
    tcb_info: TcbInfo
    qe_identity: QeIdentity
    earliest_issue: datetime.datetime
    latest_issue: datetime.datetime
    earliest_expiration: datetime.datetime

    def current_at(self, now: datetime.datetime) -> bool:
        return self.latest_issue <= now <= self.earliest_expiration

    def crl_number(self, crl: x509.CertificateRevocationList) -> int | None:
        try:
            return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
        except x509.ExtensionNotFound:
            return None


def _crl(der: bytes, where: str) -> x509.CertificateRevocationList:
    try:
        return x509.load_der_x509_crl(der)
    except ValueError:
        raise CollateralError(f"{where}: not a DER CRL") from None


def _signing_cert(pem: bytes, where: str, root: x509.Certificate, root_crl: x509.CertificateRevocationList) -> x509.Certificate:
    chain = load_pem_chain(pem, where)
    leaf = chain[0]
    for extra in chain[1:]:
        if extra.subject == root.subject and not same_cert(extra, root):
            raise CollateralError(f"{where}: the chain carries a root that is not the pinned Intel SGX Root CA")
    if not issued_by(leaf, root):
        raise CollateralError(f"{where}: {leaf.subject.rfc4514_string()} is not signed by the Intel SGX Root CA")
    if root_crl.get_revoked_certificate_by_serial_number(leaf.serial_number) is not None:
        raise CollateralError(f"{where}: {leaf.subject.rfc4514_string()} is revoked by the root CA CRL")
    return leaf


def verify_collateral(collateral: TdxCollateral, root: x509.Certificate) -> VerifiedCollateral:
    """Every signature and revocation check of step 3; the time window is computed, not judged."""
    if root.fingerprint(hashes.SHA256()).hex() != ROOT_CA_SHA256:
        raise CollateralError("trust anchor is not the pinned Intel SGX Root CA")
    root_crl = _crl(collateral.root_ca_crl, "root_ca_crl")
    if root_crl.issuer != root.subject or not root_crl.is_signature_valid(root.public_key()):  # type: ignore[arg-type]
        raise CollateralError("root_ca_crl: not signed by the Intel SGX Root CA")
    if root_crl.get_revoked_certificate_by_serial_number(root.serial_number) is not None:
        raise CollateralError("root_ca_crl: revokes the root CA itself")
    pck_issuer = _signing_cert(collateral.pck_crl_issuer_chain, "pck_crl_issuer_chain", root, root_crl)
    pck_crl = _crl(collateral.pck_crl, "pck_crl")
    if pck_crl.issuer != pck_issuer.subject or not pck_crl.is_signature_valid(pck_issuer.public_key()):  # type: ignore[arg-type]
        raise CollateralError("pck_crl: not signed by the PCK CA of pck_crl_issuer_chain")
    if "CA" not in " ".join(str(a.value) for a in pck_crl.issuer.get_attributes_for_oid(x509.NameOID.COMMON_NAME)):
        raise CollateralError("pck_crl: issuer common name does not name a CA")
    tcb_signer = _signing_cert(collateral.tcb_info_issuer_chain, "tcb_info_issuer_chain", root, root_crl)
    if not ecdsa_raw_verify(tcb_signer.public_key(), collateral.tcb_info_signature, collateral.tcb_info):
        raise CollateralError("tcb_info: signature does not verify with the TCB Signing certificate")
    qe_signer = _signing_cert(collateral.qe_identity_issuer_chain, "qe_identity_issuer_chain", root, root_crl)
    if not ecdsa_raw_verify(qe_signer.public_key(), collateral.qe_identity_signature, collateral.qe_identity):
        raise CollateralError("qe_identity: signature does not verify with the TCB Signing certificate")
    tcb_info = parse_tcb_info(collateral.tcb_info)
    qe_identity = parse_qe_identity(collateral.qe_identity)
    issues = [tcb_info.issue_date, qe_identity.issue_date, root_crl.last_update_utc, pck_crl.last_update_utc]
    expirations = [tcb_info.next_update, qe_identity.next_update]
    for crl, name in ((root_crl, "root_ca_crl"), (pck_crl, "pck_crl")):
        if crl.next_update_utc is None:
            raise CollateralError(f"{name}: has no nextUpdate")
        expirations.append(crl.next_update_utc)
    for cert in (root, pck_issuer, tcb_signer, qe_signer):
        issues.append(cert.not_valid_before_utc)
        expirations.append(cert.not_valid_after_utc)
    return VerifiedCollateral(
        digest=collateral.digest(), root=root, root_crl=root_crl, pck_crl=pck_crl, pck_crl_issuer=pck_issuer,
        tcb_info=tcb_info, qe_identity=qe_identity,
        earliest_issue=min(issues), latest_issue=max(issues), earliest_expiration=min(expirations),
    )


class CollateralVerifier:
    """`verify_collateral` once per distinct bundle (LRU by content digest)."""

    def __init__(self, root: x509.Certificate | None = None, max_entries: int = MAX_CACHED_COLLATERAL) -> None:
        self.root = root if root is not None else load_root_ca()
        self._max = max_entries
        self._cache: OrderedDict[bytes, VerifiedCollateral] = OrderedDict()
        self.verifications = 0

    def verify(self, collateral: TdxCollateral) -> VerifiedCollateral:
        digest = collateral.digest()
        found = self._cache.get(digest)
        if found is not None:
            self._cache.move_to_end(digest)
            return found
        verified = verify_collateral(collateral, self.root)
        self.verifications += 1
        self._cache[digest] = verified
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return verified
