"""The floor: the crypto and policy work one flow cannot avoid, timed in this process.

One flow needs at least: the sample evidence check (RFC 8785 JCS + sha384
of the runtime data, compared with the report data), one attestation-policy
evaluation (the default AS policy `default_cpu`, a compiled regopy bundle),
one ES256 EAR signature, one ES256 verification of that EAR at the KBS, one
resource-policy evaluation (allow-all, with the input the KBS gives it:
`policy_input` trims it for the text, and allow-all reads none) and one ECDH-ES+A256KW/A256GCM JWE
encryption of the resource to the TEE key. Each piece is run here, in
process, with the same code the servers use (no HTTP, gRPC or storage), and
timed as CPU seconds per operation (the least mean of 5 batches of
`rounds` / 5 runs: contention from other work inflates CPU time, never shrinks it). Their sum, divided by
the servers' measured CPU per flow, is the efficiency of the deployment.
"""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Callable
from typing import Any

from attestation_service.core.appraisal import appraisal
from attestation_service.core.claims import transform_claims
from attestation_service.core.policy import CompiledPolicy, policy_spec
from attestation_service.core.token import TokenSettings, TokenSigner, ear_claims
from attestation_service.core.verifiers.sample import SampleVerifier
from attestation_service.policies import default_policies
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from kbs_client.policies import ALLOW_ALL

from guest.attesters.sample import SampleAttester
from kbs.core.resource_policy import policy_data, policy_input, resource_policy_spec
from trustee_common.b64 import url_decode
from trustee_common.canonical import HashAlgorithm, primary_runtime_data, runtime_data_digest
from trustee_common.jose import TeeKeyPair
from trustee_common.jwe_encrypt import EC_ALG, encrypt
from trustee_common.rego import RegoPolicy

#: The pieces, in flow order, with what the JSON calls them.
PIECES = ("evidence_check", "as_policy", "ear_sign", "ear_verify", "resource_policy", "jwe_encrypt")
SECRET = b"benchmark secret"
BATCHES = 5


def cpu_us_per_op(run: Callable[[], object], rounds: int, batches: int = BATCHES) -> float:
    """CPU microseconds per call: the least mean over `batches` batches (other work on the machine only adds time)."""
    run()  # warm caches
    size = max(1, rounds // batches)
    means = []
    for _ in range(batches):
        start = time.process_time()
        for _ in range(size):
            run()
        means.append((time.process_time() - start) / size * 1e6)
    return min(means)


def _es256_verify(key: ec.EllipticCurvePublicKey, token: str) -> None:
    header, payload, signature = token.split(".")
    raw = url_decode(signature, "token signature")
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    key.verify(der, f"{header}.{payload}".encode("ascii"), ec.ECDSA(hashes.SHA256()))


def pieces() -> dict[str, Callable[[], object]]:
    """One callable per floor piece, on realistic inputs (a sample-TEE flow's)."""
    tee_key = TeeKeyPair.generate()
    runtime = primary_runtime_data("bench-nonce-" + "A" * 32, tee_key.public_jwk(), "")
    evidence = SampleAttester().get_evidence(runtime_data_digest(runtime, HashAlgorithm.SHA384))
    verifier = SampleVerifier()
    now = datetime.datetime.now(datetime.UTC)

    def evidence_check() -> list[tuple[dict[str, Any], str]]:
        return verifier.evaluate(evidence, runtime_data_digest(runtime, HashAlgorithm.SHA384), None, now)

    [(claims, _)] = evidence_check()
    annotated = transform_claims("sample", claims, runtime, None)
    as_policy = RegoPolicy.from_spec(policy_spec(default_policies()["default_cpu"]))
    result = as_policy.evaluate(annotated, CompiledPolicy.data({}))
    ear = ear_claims({"cpu0": appraisal("default", "default_cpu", annotated, result)}, TokenSettings(), now, epoch="0")
    signing_key = ec.generate_private_key(ec.SECP256R1())
    signer, public = TokenSigner(signing_key), signing_key.public_key()
    token = signer.sign(ear)
    resource_policy = RegoPolicy.from_spec(resource_policy_spec(ALLOW_ALL))
    # The input the KBS gives this policy: trimmed for its text (allow-all reads no `input`, so it gets `{}`).
    resource_input = policy_input(json.loads(url_decode(token.split(".")[1], "token payload")), ALLOW_ALL)
    jwk = tee_key.public_jwk()
    tee_public = ec.EllipticCurvePublicNumbers(
        int.from_bytes(url_decode(jwk["x"], "x"), "big"), int.from_bytes(url_decode(jwk["y"], "y"), "big"), ec.SECP256R1()).public_key()
    assert resource_policy.evaluate(resource_input, policy_data("resource", "default/bench/key", {})).get("allow") is True
    return {
        "evidence_check": evidence_check,
        "as_policy": lambda: as_policy.evaluate(annotated, CompiledPolicy.data({})),
        "ear_sign": lambda: signer.sign(ear),
        "ear_verify": lambda: _es256_verify(public, token),
        "resource_policy": lambda: resource_policy.evaluate(resource_input, policy_data("resource", "default/bench/key", {})),
        "jwe_encrypt": lambda: encrypt(tee_public, EC_ALG, SECRET),
    }


def least(*timings: dict[str, float]) -> dict[str, float]:
    """Per piece, the least of several measurements (e.g. before and after the load), and their `total`."""
    combined = {name: min(t[name] for t in timings) for name in PIECES}
    combined["total"] = round(sum(combined.values()), 1)
    return combined


def measure(rounds: int) -> dict[str, float]:
    """CPU microseconds per operation of each piece, and `total`."""
    timings = {name: round(cpu_us_per_op(run, rounds), 1) for name, run in pieces().items()}
    timings["total"] = round(sum(timings[name] for name in PIECES), 1)
    return timings
