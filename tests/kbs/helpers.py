"""Helpers for the KBS tests: key material, configs, tokens, and starting real processes.

Tokens minted here are real ES256 JWTs signed with the AS signing key
(or others, for negative cases) with the header `jwk` + `x5c` the AS uses,
so the KBS verification path under test is the production one.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwcrypto import jwk, jws

from tests.procs import Proc, free_port, script
from trustee_common.admin_token import generate_admin_key, mint_admin_token
from trustee_common.b64 import url_decode, url_encode
from trustee_common.errors import ERROR_TYPE_PREFIX
from trustee_common.pki import ensure_token_signing_material, issue_leaf, make_ca, pem_cert, pem_private_key

ALLOW_ALL = 'package policy\ndefault allow = false\nallow if { data.plugin == "resource" }\n'
DENY_ALL = "package policy\ndefault allow = false\n"


@dataclass(frozen=True)
class Material:
    root: Path
    ca_cert: Path
    token_key: Path
    token_chain: Path
    admin_private: bytes
    admin_public: Path
    other_admin_private: bytes

    def admin_token(self, role: str = "admin", **kwargs: Any) -> str:
        return mint_admin_token(self.admin_private, role=role, **kwargs)


def make_material(root: Path) -> Material:
    files = ensure_token_signing_material(root / "as")
    private, public = generate_admin_key()
    other_private, _ = generate_admin_key()
    (root / "admin.pub").write_bytes(public)
    return Material(root, files.ca_cert, files.token_key, files.token_cert_chain, private, root / "admin.pub", other_private)


def kbs_toml(
    port: int,
    material: Material,
    repo: Path,
    *,
    as_port: int,
    admin_mode: str = "AuthenticatedAuthorization",
    timeout_minutes: float = 5,
    payload_mib: int = 2,
    extra_http: str = "",
    extra_token: str = "",
    storage: str = "",
) -> str:
    return f"""
[http_server]
sockets = ["127.0.0.1:{port}"]
insecure_http = true
payload_request_size = {payload_mib}
{extra_http}

[admin]
authorization_mode = "{admin_mode}"
[admin.authentication.bearer_jwt]
identity_providers = [{{ public_key_uri = "file://{material.admin_public}" }}]
[admin.authorization.regex_acl]
acls = [
  {{ role = "admin", allowed_endpoints = "^/kbs/v0/.*$" }},
  {{ role = "reader", allowed_endpoints = "^/kbs/v0/resource-policy$" }},
]

[attestation_token]
trusted_certs_paths = ["{material.ca_cert}"]
{extra_token}

[attestation_service]
type = "coco_as_grpc"
as_addr = "http://127.0.0.1:{as_port}"
timeout = {timeout_minutes}

{storage}

[[plugins]]
name = "resource"
type = "LocalFs"
dir_path = "{repo}"
"""


@dataclass
class Kbs:
    proc: Proc
    port: int
    repo: Path
    config: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str) -> str:
        return f"{self.url}/kbs/v0/{path}"


def start_kbs(directory: Path, config_text: str, port: int, *, args: tuple[str, ...] = (), env: dict[str, str] | None = None,
              wait: bool = True) -> Kbs:
    """A KBS on `port`, once that port accepts connections (unless `wait` is false)."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "kbs.toml"
    config.write_text(config_text)
    proc = Proc([script("kbs"), "--config-file", str(config), *args], directory / "kbs.log", port=port if wait else None, env=env)
    return Kbs(proc, port, directory / "repo", config)


def sqlite_storage(path: Path) -> str:
    """A `[storage_backend]` table for an SQLite file at `path`."""
    return f'[storage_backend]\nstorage_type = "Sqlite"\n[storage_backend.backends.sqlite]\npath = "{path}"\n'


@dataclass
class Backend:
    """A real RVPS and an AS (GrpcRemote to it, signing with the test token key) for KBS tests."""

    procs: list[Proc]
    rvps_port: int
    as_port: int

    def start_kbs(self, root: Path, material: Material, extra: str = "", env: dict[str, str] | None = None) -> Kbs:
        """A KBS under `root/kbs` on this backend's AS, with `extra` config appended; stopped with the backend."""
        port = free_port()
        kbs = start_kbs(root / "kbs", kbs_toml(port, material, root / "kbs" / "repo", as_port=self.as_port) + extra, port, env=env)
        self.procs.append(kbs.proc)
        return kbs

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


def start_backend(root: Path, material: Material) -> Backend:
    """Start the RVPS and the AS under `root`; the caller appends its KBS processes and calls `stop()`."""
    rvps_port, as_port = free_port(), free_port()
    (root / "rvps.toml").write_text(sqlite_storage(root / "rvps.sqlite3"))
    (root / "as.toml").write_text(
        sqlite_storage(root / "as.sqlite3")
        + f'[rvps_config]\ntype = "GrpcRemote"\naddress = "127.0.0.1:{rvps_port}"\n'
        + f'[attestation_token_broker.signer]\nkey_path = "{material.token_key}"\ncert_path = "{material.token_chain}"\n'
    )
    rvps_args = [script("rvps"), "--config", str(root / "rvps.toml"), "--address", f"127.0.0.1:{rvps_port}"]
    backend = Backend([Proc(rvps_args, root / "rvps.log", port=rvps_port)], rvps_port, as_port)
    try:
        as_args = [script("grpc-as"), "--config-file", str(root / "as.toml"), "--socket", f"127.0.0.1:{as_port}"]
        backend.procs.append(Proc(as_args, root / "as.log", port=as_port))
    except Exception:
        backend.stop()
        raise
    return backend


def run_kbs_expect_exit(directory: Path, config_text: str, *, args: tuple[str, ...] = (), timeout: float = 20.0,
                        env: dict[str, str] | None = None) -> tuple[int, str]:
    """Start kbs with a config that must be refused; returns (exit code, output)."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "kbs.toml"
    config.write_text(config_text)
    proc = Proc([script("kbs"), "--config-file", str(config), *args], directory / "kbs.log", env=env)
    deadline = time.monotonic() + timeout
    while proc.popen.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    code = proc.stop()
    return code, proc.log.read_text(errors="replace")


def ear_claims(tee: str, tee_pubkey: dict[str, Any] | None, *, exp_in: float = 300, status: str = "affirming") -> dict[str, Any]:
    """An EAR-shaped claims set as the AS issues it (trustee-server.md 6.5)."""
    now = int(time.time())
    runtime = {"nonce": "n", "tee-pubkey": tee_pubkey, "additional-evidence": ""} if tee_pubkey is not None else None
    evidence: dict[str, Any] = {tee: {"svn": "1"}, "report_data": "AAAA", "runtime_data_claims": runtime}
    return {
        "eat_profile": "tag:github.com,2024:confidential-containers/Trustee",
        "iat": now,
        "exp": now + exp_in,
        "iss": "CoCo-Attestation-Service",
        "ear.verifier-id": {"developer": "https://confidentialcontainers.org", "build": "test"},
        "submods": {"cpu0": {"ear.status": status, "ear.appraisal-policy-id": "default", "ear.veraison.annotated-evidence": evidence}},
    }


def _public_jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    public: dict[str, Any] = json.loads(jwk.JWK.from_pyca(key.public_key()).export_public())
    return {"kty": "EC", "crv": "P-256", "alg": "ES256", "x": public["x"], "y": public["y"]}


def mint_token(
    claims: dict[str, Any],
    signing_key: ec.EllipticCurvePrivateKey,
    *,
    header_key: ec.EllipticCurvePrivateKey | None = None,
    chain: list[x509.Certificate] | None = None,
) -> str:
    """ES256 JWT; the header jwk names `header_key` (default: the signing key) with `chain` as x5c."""
    header_jwk = _public_jwk(header_key or signing_key)
    if chain:
        header_jwk["x5c"] = [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode() for c in chain]
    token = jws.JWS(json.dumps(claims).encode())
    token.add_signature(jwk.JWK.from_pyca(signing_key), None, json.dumps({"alg": "ES256", "typ": "JWT", "jwk": header_jwk}))
    return str(token.serialize(compact=True))


def load_signing(material: Material) -> tuple[ec.EllipticCurvePrivateKey, list[x509.Certificate]]:
    key = serialization.load_pem_private_key(material.token_key.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key, x509.load_pem_x509_certificates(material.token_chain.read_bytes())


def untrusted_signing() -> tuple[ec.EllipticCurvePrivateKey, list[x509.Certificate]]:
    ca_key, ca = make_ca("untrusted CA")
    key, leaf = issue_leaf(ca_key, ca, "untrusted signer")
    return key, [leaf, ca]


def tls_files(directory: Path) -> tuple[Path, Path, bytes]:
    """A CA and a 127.0.0.1 server certificate: (cert path, key path, CA PEM)."""
    ca_key, ca = make_ca("test TLS CA")
    key, leaf = issue_leaf(ca_key, ca, "127.0.0.1", ip_addresses=("127.0.0.1",))
    cert_path, key_path = directory / "tls.pem", directory / "tls.key"
    cert_path.write_bytes(pem_cert(leaf) + pem_cert(ca))
    key_path.write_bytes(pem_private_key(key))
    return cert_path, key_path, pem_cert(ca)


@dataclass
class KbsStack:
    """A started KBS and the material its config names (the plugin tests' module fixture)."""

    kbs: Kbs
    material: Material


async def admin_call(kbs: Kbs, material: Material, method: str, path: str, role: str | None = "admin",
                     **kwargs: Any) -> tuple[int, bytes]:
    """(status, body) of `method /kbs/v0/<path>` with an admin token of `role` (none when None)."""
    import aiohttp

    headers = {} if role is None else {"Authorization": f"Bearer {material.admin_token(role)}"}
    async with aiohttp.ClientSession() as http, http.request(method, kbs.api(path), headers=headers, **kwargs) as response:
        return response.status, await response.read()


def policy_body(text: str) -> dict[str, str]:
    return {"policy": url_encode(text.encode())}


def variant(body: Any) -> str:
    assert isinstance(body, dict), body
    return str(body["type"]).removeprefix(ERROR_TYPE_PREFIX)


__all__ = ["free_port"]


def _rsa_jwk(n: int, e: int, n_bytes: int | None = None) -> dict[str, Any]:
    length = n_bytes or (n.bit_length() + 7) // 8
    return {"kty": "RSA", "alg": "RSA-OAEP-256", "n": url_encode(n.to_bytes(length, "big")),
            "e": url_encode(e.to_bytes(max(1, (e.bit_length() + 7) // 8), "big"))}


def bad_tee_keys() -> dict[str, tuple[dict[str, Any], str]]:
    """`tee-pubkey` JWKs that cannot be used at release, with the words the KBS's 400 must contain."""
    n2048 = rsa.generate_private_key(65537, 2048).public_key().public_numbers().n
    n512 = (1 << 511) | 0x1F3  # 512 significant bits, sent zero-padded to 256 bytes (2048 bits encoded)
    ec_key = json.loads(jwk.JWK.generate(kty="EC", crv="P-256").export_public())
    y = url_decode(ec_key["y"], "y")
    off_curve = {"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW", "x": ec_key["x"],
                 "y": url_encode(y[:-1] + bytes([y[-1] ^ 1]))}
    return {
        "rsa-512-zero-padded": (_rsa_jwk(n512, 65537, 256), "RSA modulus is 512 bits, at least 2048 required"),
        "rsa-e-1": (_rsa_jwk(n2048, 1), "RSA public exponent 1 is invalid"),
        "rsa-e-2": (_rsa_jwk(n2048, 2), "RSA public exponent 2 is invalid"),
        "rsa-e-even": (_rsa_jwk(n2048, 65536), "RSA public exponent 65536 is invalid"),
        "rsa-e-above-n": (_rsa_jwk(n2048, n2048 + 2), "is invalid (must be odd, >= 3 and < n)"),
        "rsa-even-modulus": (_rsa_jwk(n2048 + 1, 65537), "RSA modulus is even"),
        "ec-point-off-curve": (off_curve, "point is not on P-256"),
        "ec-p384": ({**off_curve, "crv": "P-384"}, "unsupported curve 'P-384'"),
    }
