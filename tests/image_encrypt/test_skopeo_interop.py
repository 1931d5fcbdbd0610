"""`trustee image encrypt` against a real KBS (`trustee run --as builtin`), opened by real skopeo, and the reverse.

(a) our encryption, skopeo's decryption with the JWE recipients' private
keys (EC P-256 and RSA): the decrypted layers are the original blobs with
their original media types; the KEK sits in the KBS (fetched back with
`kbs-client get-resource`) and opens every layer through the
attestation-agent annotation; no KEK file is written without --keep-kek.
(b) skopeo's encryption, our decryption: `unwrap_with_private_keys` and
`decrypt_layer` restore every layer, and re-encrypting with skopeo's own
layer key and nonce reproduces skopeo's blob and HMAC byte for byte.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.oci_layouts import Layout, build_layout, directory, file, read_manifest, skopeo, symlink
from tests.tools.stack import TrusteeRun, run_tool
from trustee_common.ocicrypt import (
    JWE_ANNOTATION,
    PROVIDER_ANNOTATION,
    PUBOPTS_ANNOTATION,
    AnnotationPacket,
    PrivateLayerOptions,
    PublicLayerOptions,
    decrypt_layer,
    encrypt_layer,
    unwrap_private_options,
    unwrap_with_private_keys,
)

KEY_ID = re.compile(r"^kbs:///default/image-kek/[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$")

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def trustee(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrusteeRun]:
    base = tmp_path_factory.mktemp("trustee")
    stack = TrusteeRun(base / "trustee-data", base / "trustee.log", extra=("--as", "builtin"))
    try:
        result = run_tool("kbs-client", "--url", stack.url, "config", "--admin-token-file", str(stack.admin_token),
                          "set-resource-policy", "--allow-all")
        assert result.returncode == 0, result.stderr
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """name → (private PEM, public PEM) files."""
    root = tmp_path_factory.mktemp("keys")
    found = {}
    for name, key in (("ec", ec.generate_private_key(ec.SECP256R1())), ("rsa", rsa.generate_private_key(65537, 2048))):
        private, public = root / f"{name}.pem", root / f"{name}.pub.pem"
        private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        found[name] = (private, public)
    return found


def make_layout(path: Path, *, compress: bool = True) -> Layout:
    return build_layout(path, [
        [directory("etc"), file("etc/os-release", b"ID=test\n"), symlink("etc/link", "os-release")],
        [file("bin/tool", bytes(range(256)) * 600, mode=0o755)],
        [file("data/big", b"\x00\x01" * 300_000)],
    ], tag="v1", compress=compress)


def encrypt_cli(*args: str, cwd: Path) -> tuple[int, str, str]:
    result = run_tool("trustee", "image", "encrypt", *args, cwd=cwd)
    return result.returncode, result.stdout, result.stderr


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def blob(root: Path, digest: str) -> bytes:
    return (root / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()


def kbs_resource(trustee: TrusteeRun, kid: str) -> bytes:
    result = run_tool("kbs-client", "--url", trustee.url, "get-resource", "--path", kid.removeprefix("kbs:///"))
    assert result.returncode == 0, result.stderr
    return base64.b64decode(result.stdout.strip())


def open_layer(root: Path, layer: dict[str, object], plbco: bytes) -> bytes:
    annotations = layer["annotations"]
    assert isinstance(annotations, dict)
    out = io.BytesIO()
    decrypt_layer(io.BytesIO(blob(root, str(layer["digest"]))), out, PrivateLayerOptions.from_json(plbco),
                  PublicLayerOptions.from_annotation(annotations[PUBOPTS_ANNOTATION]))
    return out.getvalue()


@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "tar"])
def test_our_encryption_is_opened_by_skopeo_and_by_the_kbs_kek(trustee: TrusteeRun, keys: dict[str, tuple[Path, Path]],
                                                                tmp_path: Path, compress: bool) -> None:
    plain = make_layout(tmp_path / "plain", compress=compress)
    before = tree_digest(plain.path)
    code, out, err = encrypt_cli("--input", plain.ref, "--output", f"oci:{tmp_path / 'enc'}", "--kbs-url", trustee.url,
                                 "--admin-token-file", str(trustee.admin_token),
                                 "--recipient", f"jwe:{keys['ec'][1]}", "--recipient", f"jwe:{keys['rsa'][1]}", cwd=tmp_path)
    assert code == 0, err
    kid = out.strip()
    assert KEY_ID.fullmatch(kid), out
    assert tree_digest(plain.path) == before  # the input is only read

    original, encrypted = read_manifest(plain.path, "v1"), read_manifest(tmp_path / "enc", "v1")
    assert encrypted["config"] == original["config"]
    for plain_layer, enc_layer in zip(plain.layers, encrypted["layers"], strict=True):  # type: ignore[call-overload]
        assert enc_layer["mediaType"] == f"{plain_layer['mediaType']}+encrypted"
        assert enc_layer["digest"] != plain_layer["digest"] and enc_layer["size"] == plain_layer["size"]
        assert {PUBOPTS_ANNOTATION, PROVIDER_ANNOTATION, JWE_ANNOTATION} <= set(enc_layer["annotations"])
        assert AnnotationPacket.from_annotation(enc_layer["annotations"][PROVIDER_ANNOTATION]).kid == kid

    for name in ("ec", "rsa"):
        dest = tmp_path / f"dec-{name}"
        result = skopeo("copy", "--decryption-key", str(keys[name][0]), f"oci:{tmp_path / 'enc'}:v1", f"oci:{dest}:v1")
        assert result.returncode == 0, result.stderr
        decrypted = read_manifest(dest, "v1")
        assert [(d["mediaType"], d["digest"], d["size"]) for d in decrypted["layers"]] == [  # type: ignore[attr-defined]
            (d["mediaType"], d["digest"], d["size"]) for d in plain.layers]
        assert all(blob(dest, str(d["digest"])) == blob(plain.path, str(d["digest"])) for d in plain.layers)

    kek = kbs_resource(trustee, kid)
    assert len(kek) == 32
    for plain_layer, enc_layer in zip(plain.layers, encrypted["layers"], strict=True):  # type: ignore[call-overload]
        plbco = unwrap_private_options(AnnotationPacket.from_annotation(enc_layer["annotations"][PROVIDER_ANNOTATION]), kek)
        assert open_layer(tmp_path / "enc", enc_layer, plbco) == blob(plain.path, str(plain_layer["digest"]))
    everything = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p.stat().st_size == 32]
    assert kek not in everything  # the KEK was not written anywhere without --keep-kek


def test_keep_kek_and_key_id(trustee: TrusteeRun, tmp_path: Path) -> None:
    plain = make_layout(tmp_path / "plain")
    kid = "kbs:///default/image-kek/chosen-name"
    code, out, err = encrypt_cli("--input", plain.ref, "--output", f"oci:{tmp_path / 'enc'}:release", "--kbs-url", trustee.url,
                                 "--admin-token-file", str(trustee.admin_token), "--key-id", kid,
                                 "--keep-kek", str(tmp_path / "kek.bin"), cwd=tmp_path)
    assert code == 0, err
    assert out.strip() == kid
    assert stat.S_IMODE((tmp_path / "kek.bin").stat().st_mode) == 0o600
    assert (tmp_path / "kek.bin").read_bytes() == kbs_resource(trustee, kid)
    layers = read_manifest(tmp_path / "enc", "release")["layers"]
    assert all(JWE_ANNOTATION not in d["annotations"] for d in layers)  # type: ignore[attr-defined]


def test_kbs_refusal_writes_nothing(trustee: TrusteeRun, tmp_path: Path) -> None:
    """No admin token (the working directory holds none): the KBS refuses, the error says why, no output appears."""
    plain = make_layout(tmp_path / "plain")
    code, out, err = encrypt_cli("--input", plain.ref, "--output", f"oci:{tmp_path / 'enc'}", "--kbs-url", trustee.url,
                                 "--keep-kek", str(tmp_path / "kek.bin"), cwd=tmp_path)
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and "refused to store the KEK at default/image-kek/" in err, err
    assert "no admin token was sent" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain"]


def test_jwe_only_needs_no_kbs(keys: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    plain = make_layout(tmp_path / "plain")
    code, out, err = encrypt_cli("--input", plain.ref, "--output", f"oci:{tmp_path / 'enc'}", "--recipient", f"jwe:{keys['ec'][1]}",
                                 cwd=tmp_path)
    assert code == 0, err
    assert out == ""
    for layer in read_manifest(tmp_path / "enc", "v1")["layers"]:  # type: ignore[attr-defined]
        assert PROVIDER_ANNOTATION not in layer["annotations"]
        plbco = unwrap_with_private_keys(layer["annotations"][JWE_ANNOTATION], [keys["ec"][0].read_bytes()])
        assert hashlib.sha256(open_layer(tmp_path / "enc", layer, plbco)).hexdigest() == PrivateLayerOptions.from_json(plbco).digest[7:]


def test_skopeo_encryption_is_opened_by_us_byte_for_byte(keys: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    plain = make_layout(tmp_path / "plain")
    result = skopeo("copy", "--encryption-key", f"jwe:{keys['ec'][1]}", "--encryption-key", f"jwe:{keys['rsa'][1]}",
                    plain.ref, f"oci:{tmp_path / 'senc'}:v1")
    assert result.returncode == 0, result.stderr
    encrypted = read_manifest(tmp_path / "senc", "v1")
    for plain_layer, enc_layer in zip(plain.layers, encrypted["layers"], strict=True):  # type: ignore[call-overload]
        assert enc_layer["mediaType"] == f"{plain_layer['mediaType']}+encrypted"
        original = blob(plain.path, str(plain_layer["digest"]))
        for name in ("ec", "rsa"):
            plbco = unwrap_with_private_keys(enc_layer["annotations"][JWE_ANNOTATION], [keys[name][0].read_bytes()])
            assert open_layer(tmp_path / "senc", enc_layer, plbco) == original
        private = PrivateLayerOptions.from_json(plbco)
        assert private.digest == plain_layer["digest"]
        again = io.BytesIO()
        _, public = encrypt_layer(io.BytesIO(original), again, symkey=private.symkey, nonce=private.nonce)
        assert again.getvalue() == blob(tmp_path / "senc", str(enc_layer["digest"]))
        assert public.to_annotation() == enc_layer["annotations"][PUBOPTS_ANNOTATION]  # the same JSON bytes as Go's


def test_skopeo_refuses_a_tampered_layer_of_ours(keys: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    plain = make_layout(tmp_path / "plain")
    assert encrypt_cli("--input", plain.ref, "--output", f"oci:{tmp_path / 'enc'}", "--recipient", f"jwe:{keys['ec'][1]}",
                       cwd=tmp_path)[0] == 0
    layer = read_manifest(tmp_path / "enc", "v1")["layers"][1]  # type: ignore[index]
    pubopts = json.loads(base64.b64decode(layer["annotations"][PUBOPTS_ANNOTATION]))
    assert pubopts["cipher"] == "AES_256_CTR_HMAC_SHA256" and pubopts["cipheroptions"] == {}
    path = tmp_path / "enc" / "blobs" / "sha256" / layer["digest"][7:]
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))  # the blob digest no longer matches either: skopeo refuses before or at the HMAC
    result = skopeo("copy", "--decryption-key", str(keys["ec"][0]), f"oci:{tmp_path / 'enc'}:v1", f"oci:{tmp_path / 'dec'}:v1")
    assert result.returncode != 0
