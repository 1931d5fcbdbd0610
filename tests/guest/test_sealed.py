"""Sealed secrets end to end: `trustee run`, real AA + CDH + REST server, secrets sealed by `kbs-client`.

The operator stores the secret, the KEK and the verification key in the KBS
with `kbs-client config set-resource`, seals with `kbs-client config
seal-secret`, and the guest unseals through the CDH's gRPC `UnsealSecret`
and the REST server's `POST /cdh/secret`. Refusals: tampered, unsigned,
wrong key, unknown key id, policy deny, no key configured, oversized.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from joserfc import jws
from joserfc.jwk import ECKey

from tests.guest.guestprocs import GuestProc, guest_env, run_once, start_aa, start_cdh, start_rest
from tests.tools.stack import TrusteeRun, run_tool
from trustee_pb import confidential_data_hub_pb2 as pb
from trustee_pb import confidential_data_hub_pb2_grpc as pb_grpc

pytestmark = pytest.mark.e2e

SECRET = b"v4ult-plaintext \x00\x01\xfe"
ENVELOPE_PLAINTEXT = b"env3lope-plaintext \x00\xff"
SECRET_URI = "kbs:///default/test/secret"
KEK_URI = "kbs:///default/sealed/kek"
KEY_URI = "kbs:///default/sealed-secret/pubkey"
FILE_KID = "file-key.pem"
DENY_SECRET_POLICY = """package policy
default allow := false
allow if { not data["resource-path"] == "default/test/secret"; not data["resource-path"] == ["default", "test", "secret"] }
"""


def pem_private(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def pem_public(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass
class Stack:
    server: TrusteeRun
    cdh: GuestProc
    cdh_no_keys: GuestProc
    rest: GuestProc
    rest_attestation_only: GuestProc
    aa: GuestProc
    work: Path
    signing_key: Path
    file_signing_key: Path
    other_key: Path
    kek: Path


def admin(stack: Stack, *args: str) -> None:
    result = run_tool("kbs-client", "--url", stack.server.url, "config", "--admin-token-file", str(stack.server.admin_token), *args)
    assert result.returncode == 0, result.stderr


def set_resource(stack: Stack, uri: str, value: bytes) -> None:
    path = stack.work / "resource.bin"
    path.write_bytes(value)
    admin(stack, "set-resource", "--path", uri.removeprefix("kbs:///"), "--resource-file", str(path))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("sealed")
    keys = {name: ec.generate_private_key(ec.SECP256R1()) for name in ("kbs", "file", "other")}
    for name, key in keys.items():
        (work / f"{name}-signing.pem").write_bytes(pem_private(key))
    (work / FILE_KID).write_bytes(pem_public(keys["file"]))
    (work / "kek.bin").write_bytes(os.urandom(32))
    server = TrusteeRun(work / "trustee-data", work / "trustee.log")
    guests: list[GuestProc] = []
    try:
        guests.append(aa := start_aa(work, env=guest_env(AA_KBC_PARAMS=f"cc_kbc::{server.url}")))
        kbc = f'[kbc]\nname = "cc_kbc"\nurl = "{server.url}"\n[aa]\naa_socket = "{aa.addr}"\n'
        keys_config = f'[sealed_secret]\nverification_keys = ["{KEY_URI}", "{work / FILE_KID}"]\n'
        guests.append(cdh := start_cdh(work, f"skip_sealed_secret_verification = false\n{kbc}{keys_config}"))
        guests.append(cdh_no_keys := start_cdh(work, kbc, name="cdh-no-keys"))
        guests.append(rest := start_rest(work, aa.addr, cdh.addr, "resource"))
        guests.append(rest_attestation := start_rest(work, aa.addr, cdh.addr, "attestation", name="rest-attestation"))
        built = Stack(server, cdh, cdh_no_keys, rest, rest_attestation, aa, work, work / "kbs-signing.pem", work / "file-signing.pem",
                      work / "other-signing.pem", work / "kek.bin")
        admin(built, "set-resource-policy", "--allow-all")
        set_resource(built, SECRET_URI, SECRET)
        set_resource(built, KEK_URI, (work / "kek.bin").read_bytes())
        set_resource(built, KEY_URI, pem_public(keys["kbs"]))
        yield built
    finally:
        for proc in reversed(guests):
            proc.stop()
        server.stop()


def seal(*args: str) -> str:
    result = run_tool("kbs-client", "config", "seal-secret", *args)
    assert result.returncode == 0, result.stderr
    secret = result.stdout.strip()
    assert secret.startswith("sealed.")
    return secret


def seal_vault(stack: Stack, uri: str = SECRET_URI, key: Path | None = None, kid: str = KEY_URI) -> str:
    return seal("--type", "vault", "--resource-uri", uri, "--signing-key", str(key or stack.signing_key), "--signing-kid", kid)


def seal_envelope(stack: Stack, plaintext: bytes = ENVELOPE_PLAINTEXT) -> str:
    path = stack.work / "plaintext.bin"
    path.write_bytes(plaintext)
    return seal("--type", "envelope", "--key-id", KEK_URI, "--kek-file", str(stack.kek), "--file-path", str(path),
                "--signing-key", str(stack.signing_key), "--signing-kid", KEY_URI)


@pytest.fixture
async def channel(stack: Stack) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(stack.cdh.addr) as opened:
        yield opened


async def unseal(channel: grpc.aio.Channel, secret: str | bytes) -> bytes:
    raw = secret.encode() if isinstance(secret, str) else secret
    reply = await pb_grpc.SealedSecretServiceStub(channel).UnsealSecret(pb.UnsealSecretInput(secret=raw))
    return bytes(reply.plaintext)


async def refused(channel: grpc.aio.Channel, secret: str | bytes) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await unseal(channel, secret)
    return info.value


async def rest_post(stack: Stack, body: bytes, method: str = "POST", rest: GuestProc | None = None) -> tuple[int, bytes]:
    url = f"http://127.0.0.1:{(rest or stack.rest).port}/cdh/secret"
    async with aiohttp.ClientSession() as session, session.request(method, url, data=body) as response:
        return response.status, await response.read()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(segment: str) -> dict[str, object]:
    value: dict[str, object] = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    return value


# --- unsealed ---------------------------------------------------------------------


async def test_vault_secret_through_grpc(stack: Stack, channel: grpc.aio.Channel) -> None:
    secret = seal_vault(stack)
    header, payload, _ = secret.removeprefix("sealed.").split(".")
    assert b64url_json(header) == {"alg": "ES256", "kid": KEY_URI}
    assert b64url_json(payload) == {"version": "0.1.0", "type": "vault", "name": SECRET_URI, "provider": "kbs",
                                    "provider_settings": {}, "annotations": {}}
    assert await unseal(channel, secret) == SECRET


async def test_envelope_secret_through_grpc(stack: Stack, channel: grpc.aio.Channel) -> None:
    secret = seal_envelope(stack)
    payload = b64url_json(secret.split(".")[2])
    assert set(payload) == {"version", "type", "key_id", "encrypted_key", "encrypted_data", "wrap_type", "iv", "provider",
                            "provider_settings", "annotations"}
    assert payload["type"] == "envelope" and payload["wrap_type"] == "A256GCM" and payload["key_id"] == KEK_URI
    assert ENVELOPE_PLAINTEXT not in base64.b64decode(str(payload["encrypted_data"]))
    assert await unseal(channel, secret) == ENVELOPE_PLAINTEXT


async def test_vault_and_envelope_through_rest(stack: Stack) -> None:
    assert await rest_post(stack, seal_vault(stack).encode() + b"\n") == (200, SECRET)
    assert await rest_post(stack, seal_envelope(stack).encode()) == (200, ENVELOPE_PLAINTEXT)


async def test_key_from_a_configured_file(stack: Stack, channel: grpc.aio.Channel) -> None:
    assert await unseal(channel, seal_vault(stack, key=stack.file_signing_key, kid=FILE_KID)) == SECRET


async def test_private_jwk_signing_key(stack: Stack, channel: grpc.aio.Channel) -> None:
    """Upstream's `secret keygen` writes private JWKs; seal-secret takes them as --signing-key too."""
    jwk = stack.work / "file-signing.jwk"
    jwk.write_text(json.dumps(ECKey.import_key(stack.file_signing_key.read_bytes()).as_dict(private=True)))
    assert await unseal(channel, seal_vault(stack, key=jwk, kid=FILE_KID)) == SECRET


async def test_secret_signed_by_an_independent_jose_library(stack: Stack, channel: grpc.aio.Channel) -> None:
    """joserfc signs the upstream layout; the CDH verifies it (interoperable JWS, not only our own signer)."""
    key = ECKey.import_key(stack.signing_key.read_bytes())
    payload = {"version": "0.1.0", "type": "vault", "name": SECRET_URI, "provider": "kbs", "provider_settings": {},
               "annotations": {}}
    token = jws.serialize_compact({"alg": "ES256", "kid": KEY_URI}, json.dumps(payload), key, algorithms=["ES256"])
    assert await unseal(channel, f"sealed.{token}") == SECRET


async def test_envelope_with_a256ctr_data(stack: Stack, channel: grpc.aio.Channel) -> None:
    """Upstream also writes A256CTR envelopes (16-byte big-endian counter iv); the data key is still GCM-wrapped."""
    dek, iv, key_iv = os.urandom(32), os.urandom(16), os.urandom(12)
    encryptor = Cipher(algorithms.AES(dek), modes.CTR(iv)).encryptor()
    payload = {"version": "0.1.0", "type": "envelope", "key_id": KEK_URI,
               "encrypted_key": base64.b64encode(AESGCM(stack.kek.read_bytes()).encrypt(key_iv, dek, None)).decode(),
               "encrypted_data": base64.b64encode(encryptor.update(ENVELOPE_PLAINTEXT) + encryptor.finalize()).decode(),
               "wrap_type": "A256CTR", "iv": base64.b64encode(iv).decode(), "provider": "kbs", "provider_settings": {},
               "annotations": {"iv": base64.b64encode(key_iv).decode()}}
    key = ECKey.import_key(stack.signing_key.read_bytes())
    token = jws.serialize_compact({"alg": "ES256", "kid": KEY_URI}, json.dumps(payload), key, algorithms=["ES256"])
    assert await unseal(channel, f"sealed.{token}") == ENVELOPE_PLAINTEXT


async def test_our_secret_verifies_with_an_independent_jose_library(stack: Stack) -> None:
    key = ECKey.import_key(stack.signing_key.read_bytes())
    decoded = jws.deserialize_compact(seal_envelope(stack).removeprefix("sealed."), key, algorithms=["ES256"])
    assert json.loads(decoded.payload)["type"] == "envelope"


# --- refused ----------------------------------------------------------------------


@pytest.mark.parametrize("part", [0, 1, 2], ids=["header", "payload", "signature"])
async def test_tampered_secret_is_refused(stack: Stack, channel: grpc.aio.Channel, part: int) -> None:
    pieces = seal_vault(stack).removeprefix("sealed.").split(".")
    if part == 1:
        body = b64url_json(pieces[1])
        body["name"] = "kbs:///default/sealed/kek"
        pieces[1] = b64url(json.dumps(body).encode())
    elif part == 0:
        pieces[0] = b64url(json.dumps({"alg": "ES256", "kid": KEY_URI, "x": 1}).encode())
    else:
        raw = bytearray(base64.urlsafe_b64decode(pieces[2] + "=="))
        raw[10] ^= 1
        pieces[2] = b64url(bytes(raw))
    error = await refused(channel, "sealed." + ".".join(pieces))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "signature does not verify" in (error.details() or "")
    status, body = await rest_post(stack, ("sealed." + ".".join(pieces)).encode())
    assert status == 403 and b"signature does not verify" in body


@pytest.mark.parametrize(
    ("header", "signature", "message"),
    [
        ({"alg": "ES256", "kid": KEY_URI}, "", "not signed"),
        ({"alg": "none", "kid": KEY_URI}, "", "not signed"),
        ({"alg": "none", "kid": KEY_URI}, "AAAA", "alg 'none' is not supported"),
        ({"alg": "HS256", "kid": KEY_URI}, "AAAA", "alg 'HS256' is not supported"),
        ({"alg": "ES256"}, "AAAA", "has no kid"),
        (None, "fakesignature", "unsigned (legacy) secrets are refused"),
    ],
    ids=["empty-signature", "alg-none", "alg-none-signed", "hs256", "no-kid", "legacy-fake-header"],
)
async def test_unsigned_secret_is_refused(stack: Stack, channel: grpc.aio.Channel, header: dict[str, str] | None, signature: str,
                                          message: str) -> None:
    payload = seal_vault(stack).split(".")[2]
    head = "fakejwsheader" if header is None else b64url(json.dumps(header).encode())
    error = await refused(channel, f"sealed.{head}.{payload}.{signature}")
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert message in (error.details() or "")


async def test_wrong_key_is_refused(stack: Stack, channel: grpc.aio.Channel) -> None:
    for kid in (KEY_URI, FILE_KID):
        error = await refused(channel, seal_vault(stack, key=stack.other_key, kid=kid))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "signature does not verify" in (error.details() or "")
    error = await refused(channel, seal_vault(stack, key=stack.other_key, kid="kbs:///default/attacker/key"))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "not a configured verification key" in (error.details() or "")


async def test_policy_deny_on_the_named_resource_is_refused(stack: Stack, channel: grpc.aio.Channel) -> None:
    secret = seal_vault(stack)
    policy = stack.work / "deny-secret.rego"
    policy.write_text(DENY_SECRET_POLICY)
    admin(stack, "set-resource-policy", "--policy-file", str(policy))
    try:
        error = await refused(channel, secret)
        # The verification key and the KEK stay readable: only the named resource is denied.
        assert await unseal(channel, seal_envelope(stack)) == ENVELOPE_PLAINTEXT
        status, body = await rest_post(stack, secret.encode())
    finally:
        admin(stack, "set-resource-policy", "--allow-all")
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert SECRET_URI in (error.details() or "")
    assert status == 403 and SECRET not in body
    assert await unseal(channel, secret) == SECRET


async def test_missing_named_resource_is_not_found(stack: Stack, channel: grpc.aio.Channel) -> None:
    error = await refused(channel, seal_vault(stack, uri="kbs:///default/test/absent"))
    assert error.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("secret", "message"),
    [(b"not-sealed", "must start with 'sealed.'"), (b"sealed.a.b", "sealed.<header>.<payload>.<signature>"),
     (b"sealed.\xff.b.c", "ASCII")],
)
async def test_malformed_secret_is_invalid_argument(channel: grpc.aio.Channel, secret: bytes, message: str) -> None:
    error = await refused(channel, secret)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (error.details() or "")


async def test_unsupported_provider_is_invalid_argument(stack: Stack, channel: grpc.aio.Channel) -> None:
    key = ECKey.import_key(stack.signing_key.read_bytes())
    payload = {"version": "0.1.0", "type": "vault", "name": "xxx", "provider": "aliyun", "provider_settings": {}, "annotations": {}}
    token = jws.serialize_compact({"alg": "ES256", "kid": KEY_URI}, json.dumps(payload), key, algorithms=["ES256"])
    error = await refused(channel, f"sealed.{token}")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "provider 'aliyun' is not supported" in (error.details() or "")


async def test_oversized_secret_is_refused(stack: Stack, channel: grpc.aio.Channel) -> None:
    big = b"sealed." + b"A" * (64 * 1024)
    error = await refused(channel, big)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (await rest_post(stack, big))[0] == 413
    assert (await rest_post(stack, big + b"A" * 4096))[0] == 413


async def test_no_verification_key_configured_is_failed_precondition(stack: Stack) -> None:
    async with grpc.aio.insecure_channel(stack.cdh_no_keys.addr) as channel:
        error = await refused(channel, seal_vault(stack))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "sealed_secret.verification_keys" in (error.details() or "")


async def test_rest_route_rules(stack: Stack) -> None:
    assert (await rest_post(stack, b"", method="GET"))[0] == 405
    status, body = await rest_post(stack, b"  \n")
    assert status == 400 and b"sealed secret" in body
    assert (await rest_post(stack, b"hello"))[0] == 400
    assert await rest_post(stack, seal_vault(stack).encode(), rest=stack.rest_attestation_only) == (404, b"Resource Feature Not Enabled")


def test_no_secret_material_in_logs(stack: Stack) -> None:
    kek = stack.kek.read_bytes()
    for proc in (stack.cdh, stack.rest, stack.aa):
        text = proc.output()
        assert "v4ult-plaintext" not in text and "env3lope-plaintext" not in text
        assert base64.b64encode(kek).decode() not in text and "PRIVATE KEY" not in text
    assert "unsealed a vault secret naming kbs:///default/test/secret" in stack.cdh.output()


# --- kbs-client and config --------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--type", "vault"], "--type vault needs --resource-uri"),
        (["--type", "envelope", "--key-id", KEK_URI], "--type envelope needs --kek-file, --file-path"),
    ],
)
def test_seal_secret_usage_errors(stack: Stack, args: list[str], message: str) -> None:
    result = run_tool("kbs-client", "config", "seal-secret", *args, "--signing-key", str(stack.signing_key), "--signing-kid", "k")
    assert result.returncode == 2 and message in result.stderr


def test_seal_secret_bad_inputs(stack: Stack) -> None:
    base = ["config", "seal-secret", "--signing-kid", "k"]
    result = run_tool("kbs-client", *base, "--type", "vault", "--resource-uri", "http://x/a/b/c", "--signing-key", str(stack.signing_key))
    assert result.returncode == 1 and "--resource-uri" in result.stderr and "Traceback" not in result.stderr
    result = run_tool("kbs-client", *base, "--type", "vault", "--resource-uri", SECRET_URI, "--signing-key", str(stack.kek))
    assert result.returncode == 1 and "--signing-key" in result.stderr
    result = run_tool("kbs-client", *base, "--type", "envelope", "--key-id", KEK_URI, "--kek-file", str(stack.signing_key),
                      "--file-path", str(stack.kek), "--signing-key", str(stack.signing_key))
    assert result.returncode == 1 and "32 bytes" in result.stderr


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("skip_sealed_secret_verification = true\n", "skip_sealed_secret_verification = true is not supported"),
        ('[sealed_secret]\nverification_keys = ["relative.pem"]\n', "neither a kbs:/// URI nor an absolute file path"),
        ('[sealed_secret]\nverification_keys = ["kbs:///a/../b"]\n', "sealed_secret.verification_keys: resource URI"),
        ('[sealed_secret]\nverification_keys = ["/nonexistent/key.pem"]\n', "cannot read /nonexistent/key.pem"),
        ('[sealed_secret]\nverification_key = "x"\n', "unknown key(s) in config.sealed_secret: verification_key"),
    ],
)
def test_bad_sealed_secret_config_stops_start_up(tmp_path: Path, config: str, message: str) -> None:
    path = tmp_path / "cdh.toml"
    path.write_text(config)
    result = run_once("confidential-data-hub", "--config", str(path))
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_key_file_stops_start_up(tmp_path: Path) -> None:
    (tmp_path / "key.pem").write_bytes(b"not a key")
    path = tmp_path / "cdh.toml"
    path.write_text(f'[sealed_secret]\nverification_keys = ["{tmp_path / "key.pem"}"]\n')
    result = run_once("confidential-data-hub", "--config", str(path))
    assert result.returncode == 1
    assert "neither a JWK nor a PEM public key" in result.stderr
