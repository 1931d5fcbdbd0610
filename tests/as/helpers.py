"""Building AS requests from the real sample attesters, and checking tokens independently.

Token checks use joserfc (independent of the AS's direct `cryptography` signing) and
`cryptography` for the x5c chain.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jwt
from joserfc.jwk import ECKey
from joserfc.jws import JWSRegistry

from guest.attesters.sample import SampleAttester, SampleDeviceAttester
from trustee_common.b64 import url_encode
from trustee_common.canonical import device_runtime_data, primary_runtime_data, runtime_data_digest
from trustee_pb import attestation_pb2 as pb

TEE_PUBKEY = {"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW", "x": "AAAA", "y": "BBBB"}
SAMPLE_RVS = {"svn": ["1"], "launch_digest": ["abcde"], "major_version": 1, "minimum_minor_version": 1}


def b64url_json(value: Any) -> str:
    return url_encode(json.dumps(value).encode())


def sample_request(nonce: str = "bm9uY2U=", additional: str = "", **extra: Any) -> pb.IndividualAttestationRequest:
    runtime = primary_runtime_data(nonce, TEE_PUBKEY, additional)
    evidence = SampleAttester().get_evidence(runtime_data_digest(runtime))
    return pb.IndividualAttestationRequest(
        tee="sample",
        evidence=b64url_json(evidence),
        structured_runtime_data=json.dumps(runtime),
        runtime_data_hash_algorithm="sha384",
        **extra,
    )


def device_request(nonce: str = "bm9uY2U=") -> pb.IndividualAttestationRequest:
    runtime = device_runtime_data(nonce, TEE_PUBKEY)
    evidence = SampleDeviceAttester().get_evidence(runtime_data_digest(runtime))
    return pb.IndividualAttestationRequest(
        tee="sampledevice",
        evidence=b64url_json(evidence),
        structured_runtime_data=json.dumps(runtime),
        runtime_data_hash_algorithm="sha384",
    )


def attestation(*items: pb.IndividualAttestationRequest, policy: str | None = "default") -> pb.AttestationRequest:
    return pb.AttestationRequest(verification_requests=list(items), policy_ids=[] if policy is None else [policy])


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def token_header(token: str) -> dict[str, Any]:
    header: dict[str, Any] = json.loads(b64url_decode(token.split(".")[0]))
    return header


def verify_token(token: str, ca_pem: bytes | None) -> dict[str, Any]:
    """Check the ES256 signature with the header JWK and (given a CA) the x5c chain; return the claims."""
    header = token_header(token)
    assert header["alg"] == "ES256"
    assert header["typ"] == "JWT"
    jwk = header["jwk"]
    assert (jwk["kty"], jwk["crv"], jwk["alg"]) == ("EC", "P-256", "ES256")
    key = ECKey.import_key({k: jwk[k] for k in ("kty", "crv", "x", "y")})
    registry = JWSRegistry(algorithms=["ES256"])
    registry.max_header_length = 8192  # the x5c chain makes the header larger than joserfc's default
    claims: dict[str, Any] = jwt.decode(token, key, registry=registry).claims
    if ca_pem is not None:
        chain = [x509.load_der_x509_certificate(base64.b64decode(c, validate=True)) for c in jwk["x5c"]]
        ca = x509.load_pem_x509_certificate(ca_pem)
        assert chain[-1] == ca
        chain[0].verify_directly_issued_by(ca)
        leaf_key = chain[0].public_key()
        assert isinstance(leaf_key, ec.EllipticCurvePublicKey)
        numbers = leaf_key.public_numbers()
        assert numbers.x == int.from_bytes(b64url_decode(jwk["x"]), "big")
        assert numbers.y == int.from_bytes(b64url_decode(jwk["y"]), "big")
    return claims


def rpc_error(exc: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str | None, str]:
    """(code, trustee-error-variant trailer, details)."""
    trailers = dict(exc.trailing_metadata() or ())
    variant = trailers.get("trustee-error-variant")
    return exc.code(), None if variant is None else str(variant), exc.details() or ""
