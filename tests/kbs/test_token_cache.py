"""The EAR verifier's chain cache: hits for the same chain and anchors, never outside the path's validity."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from kbs.core.token import AttestationTokenVerifier, TokenTrust
from tests.kbs.helpers import mint_token
from trustee_common.errors import TokenVerifierError
from trustee_common.pki import CA_VALIDITY, issue_leaf, make_ca

T0 = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
DAY = 86400.0


def _claims(now: float) -> dict[str, Any]:
    return {"iat": int(now), "exp": int(now + 3000 * DAY), "submods": {}}


@pytest.fixture(scope="module")
def short_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A CA that expires 10 days after T0, before the leaves it issues at T0 (825 days)."""
    return make_ca("short-lived CA", now=T0 - CA_VALIDITY + datetime.timedelta(days=10))


def _signer(ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate]) -> tuple[ec.EllipticCurvePrivateKey, list[x509.Certificate]]:
    key, leaf = issue_leaf(ca[0], ca[1], "token signer", now=T0)
    return key, [leaf, ca[1]]


def test_same_chain_hits_and_is_not_used_past_the_earliest_not_after(short_ca: Any) -> None:
    key, chain = _signer(short_ca)
    verifier = AttestationTokenVerifier(TokenTrust((short_ca[1],)))
    now = T0.timestamp()
    token = mint_token(_claims(now), key, chain=chain)
    verifier.verify(token, now)
    verifier.verify(token, now + 5 * DAY)
    assert (verifier.chain_cache.misses, verifier.chain_cache.hits) == (1, 1)
    ca_expiry = short_ca[1].not_valid_after_utc.timestamp()
    assert ca_expiry < chain[0].not_valid_after_utc.timestamp()
    verifier.verify(token, ca_expiry)
    with pytest.raises(TokenVerifierError):
        verifier.verify(token, ca_expiry + 1)
    with pytest.raises(TokenVerifierError):
        verifier.verify(token, ca_expiry + 1)
    with pytest.raises(TokenVerifierError):
        verifier.verify(token, T0.timestamp() - 3600)  # before the leaf's notBefore


def test_a_different_chain_misses_the_cache(short_ca: Any) -> None:
    verifier = AttestationTokenVerifier(TokenTrust((short_ca[1],)))
    now = T0.timestamp()
    for _ in range(2):
        key, chain = _signer(short_ca)
        verifier.verify(mint_token(_claims(now), key, chain=chain), now)
    assert (verifier.chain_cache.misses, verifier.chain_cache.hits) == (2, 0)


def test_a_different_anchor_set_does_not_accept_a_chain_another_verifier_cached(short_ca: Any) -> None:
    key, chain = _signer(short_ca)
    now = T0.timestamp()
    token = mint_token(_claims(now), key, chain=chain)
    AttestationTokenVerifier(TokenTrust((short_ca[1],))).verify(token, now)
    other = AttestationTokenVerifier(TokenTrust((make_ca("other CA", now=T0)[1],)))
    with pytest.raises(TokenVerifierError):
        other.verify(token, now)
    assert other.chain_cache.hits == 0


def test_a_cached_chain_still_needs_a_valid_signature_and_matching_header_key(short_ca: Any) -> None:
    key, chain = _signer(short_ca)
    verifier = AttestationTokenVerifier(TokenTrust((short_ca[1],)))
    now = T0.timestamp()
    verifier.verify(mint_token(_claims(now), key, chain=chain), now)
    forged = mint_token(_claims(now), ec.generate_private_key(ec.SECP256R1()), header_key=key, chain=chain)
    with pytest.raises(TokenVerifierError):
        verifier.verify(forged, now)
    intruder = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(TokenVerifierError):
        verifier.verify(mint_token(_claims(now), intruder, chain=chain), now)
    assert verifier.chain_cache.hits == 2
