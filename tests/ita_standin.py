"""A stand-in for Intel Trust Authority, for tests: a real HTTPS server with the endpoints the KBS calls.

`python -m tests.ita_standin --port P --tls-cert C --tls-key K --api-key A
--collateral F --verification-time T` serves:

* `POST /appraisal/v2/attest` (header `x-api-key`; a wrong key is 401
  `{"error": ...}` as ITA answers): the `tdx.quote` is appraised by OUR TDX
  verifier (`attestation_service.core.verifiers.tdx`) with the corpus
  collateral at the corpus's verification time (PROVENANCE.md), and a v2
  token (`ver` 2.0.0, claims nested under `tdx`, seed-systems.md 4.4) is
  signed PS384 (or RS256 when asked) with the stand-in's own RSA key. The
  `runtime_data` is echoed parsed as `tdx.attester_runtime_data`.
  Real ITA also checks SHA-512(runtime_data) == the quote's REPORTDATA; a
  corpus quote cannot bind a fresh key, so the stand-in checks it only when
  `enforce_binding` is set (it is, by default) and the tests turn it off for
  the release flow (saying so), and check the binding bytes separately.
* `POST /appraisal/v1/attest`: the same for ITA's v1 body (`quote`,
  `runtime_data`, `event_log`, `policy_ids`, ... flat at the top level),
  answered with a v1 token (`ver` 1.0.0, the `tdx_*` and `attester_*`
  claims flat, seed-systems.md 4.4).
* `GET /certs`: the JWK set, the key once per algorithm (PS384, RS256) as
  ITA lists it (`kid`, `alg`, `n`, `e`, `x5c` leaf -> CA);
  `GET /.well-known/openid-configuration`: `{"jwks_uri": <base>/certs}`.
* Test controls (not ITA's): `POST /test/config` (JSON: `enforce_binding`,
  `unmatched` (policy ids reported unmatched), `ignore_must_match` (issue a
  token even when `policy_must_match` was sent), `lifetime` (token seconds,
  negative: expired), `issued_offset`, `unpublished` (sign with a key not
  in `/certs`), `alg`), `POST /test/rotate` (a new key replaces the
  published one), `POST /test/mint` (sign the posted claims: passport
  tokens), `GET /test/last` (the last attest body received).
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import json
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from attestation_service.core.verifiers.tdx import TdxCollateral, TdxVerificationInput, verify_tdx_quote
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwcrypto import jwk, jws

from trustee_common.errors import TrusteeError

TDX_FIELDS = {
    "mr_td": "tdx_mrtd", "rtmr_0": "tdx_rtmr0", "rtmr_1": "tdx_rtmr1", "rtmr_2": "tdx_rtmr2", "rtmr_3": "tdx_rtmr3",
    "mr_seam": "tdx_mrseam", "mrsigner_seam": "tdx_mrsignerseam", "mr_config_id": "tdx_mrconfigid",
    "mr_owner": "tdx_mrowner", "mr_owner_config": "tdx_mrownerconfig", "report_data": "tdx_report_data",
    "tcb_svn": "tdx_tee_tcb_svn", "seam_attributes": "tdx_seam_attributes", "td_attributes": "tdx_td_attributes",
    "xfam": "tdx_xfam",
}


@dataclass
class SigningKey:
    key: rsa.RSAPrivateKey
    kid: str
    chain: list[x509.Certificate]

    def jwk(self, alg: str) -> dict[str, Any]:
        public: dict[str, Any] = json.loads(jwk.JWK.from_pyca(self.key.public_key()).export_public())
        der = [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode() for c in self.chain]
        return {"kty": "RSA", "kid": self.kid, "alg": alg, "n": public["n"], "e": public["e"], "x5c": der}


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, cn)])


def new_signing_key(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate) -> SigningKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(_name("Stand-in ITA token signing")).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )
    kid = hashlib.sha384(cert.public_bytes(serialization.Encoding.DER)).hexdigest()  # 96 hex, as ITA's
    return SigningKey(key, kid, [cert, ca_cert])


def new_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP384R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(_name("Stand-in ITA Signing CA")).issuer_name(_name("Stand-in ITA Signing CA"))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA384())
    )
    return key, cert


def sign(claims: dict[str, Any], key: SigningKey, alg: str) -> str:
    token = jws.JWS(json.dumps(claims, separators=(",", ":")).encode())
    header = {"alg": alg, "kid": key.kid, "typ": "JWT", "jku": "https://portal.trustauthority.intel.com/certs"}
    token.add_signature(jwk.JWK.from_pyca(key.key), alg=alg, protected=json.dumps(header))
    return str(token.serialize(compact=True))


@dataclass
class StandIn:
    api_key: str
    collateral: TdxCollateral
    verification_time: datetime.datetime
    base: str
    ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] = field(default_factory=new_ca)
    settings: dict[str, Any] = field(default_factory=lambda: {
        "enforce_binding": True, "unmatched": [], "lifetime": 300, "issued_offset": 0, "unpublished": False, "alg": "PS384",
        "ignore_must_match": False,
    })
    last: dict[str, Any] = field(default_factory=dict)
    published: SigningKey | None = None
    hidden: SigningKey | None = None

    def __post_init__(self) -> None:
        self.published = new_signing_key(*self.ca)
        self.hidden = new_signing_key(*self.ca)

    def signer(self) -> SigningKey:
        key = self.hidden if self.settings["unpublished"] else self.published
        assert key is not None
        return key

    def appraise(self, part: dict[str, Any]) -> dict[str, Any]:
        quote = base64.b64decode(part["quote"])
        runtime = base64.b64decode(part.get("runtime_data", ""))
        binding = hashlib.sha512(runtime).digest() if self.settings["enforce_binding"] else None
        verified = verify_tdx_quote(TdxVerificationInput(quote, self.verification_time, self.collateral, report_data=binding,
                                                         require_collateral=True))
        body = verified["quote"]["body"]
        claims: dict[str, Any] = {theirs: body[ours] for ours, theirs in TDX_FIELDS.items()}
        claims.update({f"tdx_td_attributes_{k}": v for k, v in verified["td_attributes"].items()})
        claims["tdx_is_debuggable"] = verified["td_attributes"]["debug"]
        claims["attester_tcb_status"] = verified.get("tcb_status", "")
        claims["attester_advisory_ids"] = verified.get("advisory_ids", [])
        claims["attester_tcb_date"] = verified.get("tcb_date", "")
        claims["dbgstat"] = "enabled" if verified["td_attributes"]["debug"] else "disabled"
        try:
            claims["attester_runtime_data"] = json.loads(runtime)
        except ValueError:
            claims["attester_held_data"] = part.get("runtime_data", "")
        return claims

    def token(self, tdx: dict[str, Any], policy_ids: list[str], version: str = "v2") -> str:
        now = int(time.time()) + int(self.settings["issued_offset"])
        unmatched = set(self.settings["unmatched"])
        listed = [{"id": p, "version": "v1", "hash": "00"} for p in policy_ids]
        claims: dict[str, Any] = {
            "ver": "2.0.0" if version == "v2" else "1.0.0", "iss": "Intel Trust Authority",
            "iat": now, "nbf": now, "exp": now + int(self.settings["lifetime"]),
            "jti": hashlib.sha256(str(time.time_ns()).encode()).hexdigest(),
            "eat_profile": "https://portal.trustauthority.intel.com/eat_profile.html", "intuse": "generic",
            "verifier_instance_ids": ["00000000-0000-0000-0000-000000000001"],
        }
        if version == "v2":
            claims["tdx"] = tdx
        else:
            claims.update(tdx)
        matched = [p for p in listed if p["id"] not in unmatched]
        missing = [p for p in listed if p["id"] in unmatched]
        if matched:
            claims["policy_ids_matched"] = matched
        if missing:
            claims["policy_ids_unmatched"] = missing
        return sign(claims, self.signer(), str(self.settings["alg"]))


STANDIN = web.AppKey("standin", StandIn)


async def attest(request: web.Request) -> web.Response:
    return await _attest(request, "v2")


async def attest_v1(request: web.Request) -> web.Response:
    return await _attest(request, "v1")


async def _attest(request: web.Request, version: str) -> web.Response:
    standin = request.app[STANDIN]
    if request.headers.get("x-api-key") != standin.api_key:
        return web.json_response({"error": "Invalid API key"}, status=401)
    body = await request.json()
    standin.last = body
    tdx = (body.get("tdx") if version == "v2" else body) if isinstance(body, dict) else None
    if not isinstance(tdx, dict) or not isinstance(tdx.get("quote"), str):
        return web.json_response({"error": "quote is required"}, status=400)
    try:
        claims = standin.appraise(tdx)
    except (TrusteeError, ValueError) as exc:
        return web.json_response({"error": f"quote verification failed: {exc}"}, status=400)
    policy_ids = [str(p) for p in body.get("policy_ids", [])]
    if body.get("policy_must_match") and not standin.settings["ignore_must_match"] and set(policy_ids) & set(standin.settings["unmatched"]):
        return web.json_response({"error": "policy mismatch"}, status=400)
    return web.json_response({"token": standin.token(claims, policy_ids, version)})


async def certs(request: web.Request) -> web.Response:
    standin = request.app[STANDIN]
    assert standin.published is not None
    return web.json_response({"keys": [standin.published.jwk("PS384"), standin.published.jwk("RS256")]})


async def openid(request: web.Request) -> web.Response:
    return web.json_response({"jwks_uri": request.app[STANDIN].base + "/certs"})


async def configure(request: web.Request) -> web.Response:
    standin = request.app[STANDIN]
    standin.settings.update(await request.json())
    return web.json_response(standin.settings)


async def rotate(request: web.Request) -> web.Response:
    standin = request.app[STANDIN]
    standin.published = new_signing_key(*standin.ca)
    return web.json_response({"kid": standin.published.kid})


async def mint(request: web.Request) -> web.Response:
    standin = request.app[STANDIN]
    return web.json_response({"token": sign(await request.json(), standin.signer(), str(standin.settings["alg"]))})


async def last(request: web.Request) -> web.Response:
    return web.json_response(request.app[STANDIN].last)


def make_app(standin: StandIn) -> web.Application:
    app = web.Application()
    app[STANDIN] = standin
    app.router.add_post("/appraisal/v2/attest", attest)
    app.router.add_post("/appraisal/v1/attest", attest_v1)
    app.router.add_get("/certs", certs)
    app.router.add_get("/.well-known/openid-configuration", openid)
    app.router.add_post("/test/config", configure)
    app.router.add_post("/test/rotate", rotate)
    app.router.add_post("/test/mint", mint)
    app.router.add_get("/test/last", last)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls-cert", type=Path, required=True)
    parser.add_argument("--tls-key", type=Path, required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--collateral", type=Path, required=True)
    parser.add_argument("--verification-time", required=True)
    args = parser.parse_args()
    collateral = TdxCollateral.from_json(json.loads(args.collateral.read_text()))
    when = datetime.datetime.fromisoformat(args.verification_time.replace("Z", "+00:00"))
    standin = StandIn(args.api_key, collateral, when, f"https://127.0.0.1:{args.port}")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.tls_cert, args.tls_key)
    web.run_app(make_app(standin), host="127.0.0.1", port=args.port, ssl_context=context, print=None)


if __name__ == "__main__":
    main()
