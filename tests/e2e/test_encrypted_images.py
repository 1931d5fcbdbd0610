"""Encrypted container images end to end, with real parts only.

`trustee run` holds the key-encryption key; `trustee image encrypt` encrypts
an OCI layout built here and registers the key; skopeo pushes the layout to
Debian's `docker-registry`; `trustee guest pull-image` asks the guest's CDH
to pull it, which attests to the KBS for the key and unpacks the layers.
The rootfs must equal that of the same image pulled unencrypted. A deny
policy leaves no rootfs. skopeo (ocicrypt's Go implementation) checks our
layer cipher in both directions, and the CDH's keyprovider gRPC API answers
the JSON that ocicrypt sends it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.oci_layouts import (
    Layout,
    Registry,
    build_layout,
    directory,
    file,
    hardlink,
    opaque,
    read_manifest,
    skopeo,
    skopeo_push,
    symlink,
    tree,
    whiteout,
)
from tests.procs import Proc, script
from tests.tools.stack import TrusteeRun, clean_env, free_ports, run_tool
from trustee_pb import keyprovider_pb2 as kp
from trustee_pb import keyprovider_pb2_grpc as kp_grpc

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not (shutil.which("skopeo") and shutil.which("docker-registry")),
                                 reason="needs Debian's skopeo and docker-registry (scripts/system-deps.sh)")]

AA_ANNOTATION = "org.opencontainers.image.enc.keys.provider.attestation-agent"
JWE_KEY_RESOURCE = "default/image-key/jwe-private"
DENY_IMAGE_KEYS = """package policy
import rego.v1

default allow := false

allow if {
    not startswith(data["resource-path"], "default/image-kek/")
}
"""

LAYERS = [
    [directory("etc"), file("etc/motd", b"hello from layer 0\n"), file("etc/shadow", b"root:*:1::::::\n", 0o600),
     directory("usr/bin"), file("usr/bin/tool", b"#!/bin/sh\necho tool\n", 0o4755), file("usr/bin/old", b"old"),
     directory("var/cache"), file("var/cache/a", b"a")],
    [whiteout("usr/bin/old"), symlink("etc/motd.link", "motd"), hardlink("usr/bin/tool2", "usr/bin/tool"),
     opaque("var/cache"), file("var/cache/b", b"b"), file("srv/data.bin", bytes(range(256)) * 64, 0o640)],
]


@dataclass
class Images:
    server: TrusteeRun
    registry: Registry
    guest: Proc
    cdh_addr: str
    workdir: Path
    plain: Layout

    def admin(self, *args: str) -> None:
        result = run_tool("kbs-client", "--url", self.server.url, "config", "--admin-token-file", str(self.server.admin_token), *args)
        assert result.returncode == 0, result.stderr

    def pull(self, image: str, bundle: Path) -> tuple[int, str, str]:
        result = run_tool("trustee", "guest", "pull-image", image, "--bundle", str(bundle), "--cdh-addr", self.cdh_addr, timeout=300)
        return result.returncode, result.stdout.strip(), result.stderr


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Images]:
    base = tmp_path_factory.mktemp("images")
    registry = Registry(base / "registry").start()
    server = TrusteeRun(base / "trustee-data", base / "trustee.log")
    rest, aa, cdh = free_ports(3)
    try:
        guest = Proc([script("trustee"), "guest", "--kbs-url", server.url, "--rest-port", str(rest), "--aa-port", str(aa),
                      "--cdh-port", str(cdh), "--data-dir", str(base / "trustee-guest"), "--insecure-registry", registry.host,
                      "--image-decryption-key", f"kbs:///{JWE_KEY_RESOURCE}"],
                     base / "guest.log", port=rest, env=clean_env(), timeout=120)
    except BaseException:
        server.stop()
        registry.stop()
        raise
    plain = build_layout(base / "plain", LAYERS, tag="v1")
    skopeo_push(plain.ref, registry, "plain", "v1")
    state = Images(server, registry, guest, f"127.0.0.1:{cdh}", base, plain)
    state.admin("set-resource-policy", "--allow-all")
    yield state
    guest.stop()
    server.stop()
    registry.stop()


def encrypt(images: Images, out: Path, *extra: str, source: str | None = None) -> str:
    result = run_tool("trustee", "image", "encrypt", "--input", source or images.plain.ref, "--output", f"oci:{out}:v1",
                      "--kbs-url", images.server.url, "--admin-token-file", str(images.server.admin_token), *extra, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture(scope="module")
def expected_rootfs(images: Images) -> dict[str, tuple[str, int, str]]:
    bundle = images.workdir / "bundle-plain"
    code, digest, err = images.pull(images.registry.ref("plain", "v1"), bundle)
    assert code == 0, err
    assert digest == images.plain.manifest_digest
    rootfs = tree(bundle / "rootfs")
    assert "usr/bin/old" not in rootfs and "var/cache/a" not in rootfs and rootfs["var/cache/b"][0] == "file"
    assert rootfs["usr/bin/tool"][1] == 0o4755 and rootfs["etc/shadow"][1] == 0o600
    assert rootfs["etc/motd.link"] == ("symlink", 0, "motd")
    assert (bundle / "rootfs" / "usr/bin/tool2").stat().st_ino == (bundle / "rootfs" / "usr/bin/tool").stat().st_ino
    return rootfs


@pytest.fixture(scope="module")
def encrypted(images: Images) -> tuple[str, Path]:
    out = images.workdir / "encrypted"
    key_id = encrypt(images, out)
    assert key_id.startswith("kbs:///default/image-kek/")
    manifest = read_manifest(out, "v1")
    layers = manifest["layers"]
    assert isinstance(layers, list)
    assert all(str(layer["mediaType"]).endswith("+encrypted") and AA_ANNOTATION in layer["annotations"] for layer in layers)
    skopeo_push(f"oci:{out}:v1", images.registry, "secret-app", "v1")
    return key_id, out


def test_encrypted_image_pulls_to_the_same_rootfs(images: Images, encrypted: tuple[str, Path],
                                                  expected_rootfs: dict[str, tuple[str, int, str]]) -> None:
    bundle = images.workdir / "bundle-encrypted"
    code, digest, err = images.pull(images.registry.ref("secret-app", "v1"), bundle)
    assert code == 0, err
    assert digest.startswith("sha256:") and digest != images.plain.manifest_digest
    assert tree(bundle / "rootfs") == expected_rootfs
    spec = json.loads((bundle / "config.json").read_text())  # the OCI runtime config, as image-rs writes it
    assert spec["process"]["args"] == ["/bin/true"] and spec["root"]["path"] == "rootfs"


def test_encrypted_zstd_layers_pull_to_the_same_rootfs(images: Images, expected_rootfs: dict[str, tuple[str, int, str]]) -> None:
    """skopeo recompresses the layers with zstd; they are encrypted (`tar+zstd+encrypted`), pulled and unpacked alike."""
    zstd = images.workdir / "zstd"
    result = skopeo("copy", "--dest-compress-format", "zstd", "--dest-compress", images.plain.ref, f"oci:{zstd}:v1")
    assert result.returncode == 0, result.stderr
    out = images.workdir / "zstd-encrypted"
    encrypt(images, out, source=f"oci:{zstd}:v1")
    layers = read_manifest(out, "v1")["layers"]
    assert isinstance(layers, list)
    assert {layer["mediaType"] for layer in layers} == {"application/vnd.oci.image.layer.v1.tar+zstd+encrypted"}
    skopeo_push(f"oci:{out}:v1", images.registry, "zstd-app", "v1")
    bundle = images.workdir / "bundle-zstd"
    code, _, err = images.pull(images.registry.ref("zstd-app", "v1"), bundle)
    assert code == 0, err
    assert tree(bundle / "rootfs") == expected_rootfs


def test_deny_policy_fails_the_pull_and_leaves_no_rootfs(images: Images, encrypted: tuple[str, Path]) -> None:
    policy = images.workdir / "deny-image-keys.rego"
    policy.write_text(DENY_IMAGE_KEYS)
    images.admin("set-resource-policy", "--policy-file", str(policy))
    try:
        bundle = images.workdir / "bundle-denied"
        code, _, err = images.pull(images.registry.ref("secret-app", "v1"), bundle)
        assert code != 0
        assert "denied" in err.lower() or "policy" in err.lower(), err
        assert not (bundle / "rootfs").exists() and not (bundle / "config.json").exists()
        assert not any((images.workdir / "trustee-guest" / "image").iterdir())  # no downloaded or decrypted blob left
        assert not any(p.name.startswith("rootfs") for p in bundle.glob("*")) if bundle.exists() else True
    finally:
        images.admin("set-resource-policy", "--allow-all")


def test_missing_tag_is_a_clear_error(images: Images) -> None:
    bundle = images.workdir / "bundle-missing"
    code, _, err = images.pull(images.registry.ref("secret-app", "no-such-tag"), bundle)
    assert code != 0 and "no-such-tag" in err
    assert not (bundle / "rootfs").exists()


def _ec_key_files(directory_path: Path) -> tuple[Path, Path, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    priv, pub = directory_path / "image-key.pem", directory_path / "image-key.pub.pem"
    priv.write_bytes(private_pem)
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub, private_pem


def test_skopeo_encrypted_image_opens_with_a_key_from_the_kbs(images: Images, expected_rootfs: dict[str, tuple[str, int, str]]) -> None:
    """skopeo encrypts to a JWE recipient; the CDH fetches the private key as a KBS resource (`--image-decryption-key`)."""
    priv, pub, _ = _ec_key_files(images.workdir)
    out = images.workdir / "skopeo-encrypted"
    result = skopeo("copy", "--encryption-key", f"jwe:{pub}", images.plain.ref, f"oci:{out}:v1")
    assert result.returncode == 0, result.stderr
    skopeo_push(f"oci:{out}:v1", images.registry, "skopeo-app", "v1")
    bundle = images.workdir / "bundle-skopeo-no-key"
    code, _, err = images.pull(images.registry.ref("skopeo-app", "v1"), bundle)
    assert code != 0 and not (bundle / "rootfs").exists()  # the key is not at the KBS yet
    images.admin("set-resource", "--path", JWE_KEY_RESOURCE, "--resource-file", str(priv))
    bundle = images.workdir / "bundle-skopeo"
    code, _, err = images.pull(images.registry.ref("skopeo-app", "v1"), bundle)
    assert code == 0, err
    assert tree(bundle / "rootfs") == expected_rootfs


def test_our_encryption_opens_with_skopeo(images: Images) -> None:
    """`trustee image encrypt --recipient jwe:` then `skopeo copy --decryption-key`: the original layer blobs come back."""
    key_dir = images.workdir / "recipient"
    key_dir.mkdir()
    priv, pub, _ = _ec_key_files(key_dir)
    out, back = images.workdir / "for-skopeo", images.workdir / "skopeo-decrypted"
    encrypt(images, out, "--recipient", f"jwe:{pub}")
    result = skopeo("copy", "--decryption-key", str(priv), f"oci:{out}:v1", f"oci:{back}:v1")
    assert result.returncode == 0, result.stderr
    layers = read_manifest(back, "v1")["layers"]
    assert isinstance(layers, list)
    assert [(layer["mediaType"], layer["digest"], layer["size"]) for layer in layers] == \
        [(layer["mediaType"], layer["digest"], layer["size"]) for layer in images.plain.layers]


def _unwrap(cdh_addr: str, request: bytes) -> bytes:
    async def call() -> bytes:
        async with grpc.aio.insecure_channel(cdh_addr) as channel:
            reply = await kp_grpc.KeyProviderServiceStub(channel).UnWrapKey(
                kp.KeyProviderKeyWrapProtocolInput(KeyProviderKeyWrapProtocolInput=request), timeout=60)
            return bytes(reply.KeyProviderKeyWrapProtocolOutput)
    return asyncio.run(call())


def _unwrap_request(annotation_b64: str) -> bytes:
    """What ocicrypt sends a key provider: the layer annotation decoded once and re-encoded (std base64)."""
    packet = base64.b64decode(annotation_b64)
    return json.dumps({"op": "keyunwrap", "keywrapparams": {"ec": None, "optsdata": None},
                       "keyunwrapparams": {"dc": {"Parameters": {"attestation-agent": []}},
                                           "annotation": base64.b64encode(packet).decode()}}).encode()


def test_keyprovider_unwrap_key_answers_as_ocicrypt_expects(images: Images, encrypted: tuple[str, Path]) -> None:
    _, out = encrypted
    layers = read_manifest(out, "v1")["layers"]
    assert isinstance(layers, list)
    for layer, original in zip(layers, images.plain.layers, strict=True):
        reply = json.loads(_unwrap(images.cdh_addr, _unwrap_request(layer["annotations"][AA_ANNOTATION])))
        optsdata = reply["keyunwrapresults"]["optsdata"]
        assert isinstance(optsdata, list) and all(isinstance(b, int) for b in optsdata)  # ocicrypt-rs wants Vec<u8>
        plbco = json.loads(bytes(optsdata))
        assert plbco["digest"] == original["digest"] and len(base64.b64decode(plbco["symkey"])) == 32


@pytest.mark.parametrize(("mutate", "code", "words"), [
    (lambda p: {**p, "wrap_type": "A128KW"}, grpc.StatusCode.INVALID_ARGUMENT, "wrap_type"),
    (lambda p: {**p, "wrapped_data": base64.b64encode(b"\x00" * 80).decode()}, grpc.StatusCode.DATA_LOSS, "key"),
    (lambda p: {"kid": p["kid"]}, grpc.StatusCode.INVALID_ARGUMENT, "wrapped_data"),
])
def test_keyprovider_unwrap_key_errors_name_the_cause(images: Images, encrypted: tuple[str, Path], mutate: object,
                                                     code: grpc.StatusCode, words: str) -> None:
    _, out = encrypted
    layer = read_manifest(out, "v1")["layers"][0]  # type: ignore[index]
    packet = json.loads(base64.b64decode(layer["annotations"][AA_ANNOTATION]))
    bad = base64.b64encode(json.dumps(mutate(packet)).encode()).decode()  # type: ignore[operator]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        _unwrap(images.cdh_addr, _unwrap_request(bad))
    assert raised.value.code() == code and words in (raised.value.details() or ""), raised.value.details()


def test_keyprovider_wrap_key_is_unimplemented(images: Images) -> None:
    async def call() -> None:
        async with grpc.aio.insecure_channel(images.cdh_addr) as channel:
            await kp_grpc.KeyProviderServiceStub(channel).WrapKey(
                kp.KeyProviderKeyWrapProtocolInput(KeyProviderKeyWrapProtocolInput=b"{}"), timeout=30)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        asyncio.run(call())
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED and "trustee image encrypt" in (raised.value.details() or "")

