"""`pull_image` against a real registry (Debian's docker-registry), images pushed with skopeo.

Good images are compared entry by entry with the tree they must unpack to,
and their `config.json` with the runtime spec converted from their config.
Bad ones (missing tag, registry down, tampered blob, malicious tar entries,
oversized manifest, encrypted layers without a key provider) must fail with
their error class and leave no rootfs, no config.json, no partial tree, no
downloaded blob and nothing outside the bundle.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import shutil
import stat
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from guest.image.bundle import runtime_config
from guest.image.config import ImageConfig, Platform, RegistryRule
from guest.image.pull import pull_image
from tests.oci_layouts import (
    MEDIA_CONFIG,
    MEDIA_LAYER_GZIP,
    MEDIA_LAYER_TAR,
    MEDIA_MANIFEST,
    Entry,
    Registry,
    build_layout,
    directory,
    file,
    hardlink,
    opaque,
    read_manifest,
    sha256_digest,
    skopeo,
    skopeo_push,
    symlink,
    tree,
    whiteout,
)
from trustee_common.errors import (
    ImageIntegrityError,
    ImageNotFoundError,
    MalformedRequestError,
    UnsafeImageError,
    UpstreamError,
)

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
ESCAPE = "pwned-by-image-pull-test"

LAYERS: list[list[Entry]] = [
    [
        directory("etc"), file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"), file("etc/shadow", b"root:*:1::::::\n", 0o600),
        directory("bin"), file("bin/su", b"#!su\n", 0o4755), file("bin/sh", b"#!sh\n", 0o755),
        directory("opt"), file("opt/lower", b"lower\n"), directory("opt/sub"), file("opt/sub/deep", b"deep\n"),
        directory("usr"), directory("usr/share"), file("usr/share/doc", b"doc\n"),
        directory("var"), directory("var/tmp", 0o1777),
    ],
    [
        whiteout("usr/share/doc"),
        directory("opt"), file("opt/same-layer", b"kept\n"), opaque("opt"),
        symlink("etc/localtime", "/usr/share/zoneinfo/UTC"), symlink("lib", "usr/lib"),
        hardlink("bin/su-link", "bin/su"),
        file("bin/sgid", b"sgid\n", 0o2711),
    ],
    [
        file("etc/passwd", b"root:x:0:0::/root:/bin/bash\n"), whiteout("bin/sh"),
    ],
]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


EXPECTED: dict[str, tuple[str, int, str]] = {
    "etc": ("dir", 0o755, ""),
    "etc/passwd": ("file", 0o644, _sha(b"root:x:0:0::/root:/bin/bash\n")),
    "etc/shadow": ("file", 0o600, _sha(b"root:*:1::::::\n")),
    "etc/localtime": ("symlink", 0, "/usr/share/zoneinfo/UTC"),
    "bin": ("dir", 0o755, ""),
    "bin/su": ("file", 0o4755, _sha(b"#!su\n")),
    "bin/su-link": ("file", 0o4755, _sha(b"#!su\n")),
    "bin/sgid": ("file", 0o2711, _sha(b"sgid\n")),
    "opt": ("dir", 0o755, ""),
    "opt/same-layer": ("file", 0o644, _sha(b"kept\n")),
    "usr": ("dir", 0o755, ""),
    "usr/share": ("dir", 0o755, ""),
    "var": ("dir", 0o755, ""),
    "var/tmp": ("dir", 0o1777, ""),
    "lib": ("symlink", 0, "usr/lib"),
}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = Registry(tmp_path_factory.mktemp("registry")).start()
    yield reg
    reg.stop()


def insecure(reg: Registry, **kwargs: Any) -> ImageConfig:
    """The test registry is plain HTTP on loopback: it must be listed as insecure."""
    return ImageConfig(registry_rules=(RegistryRule(reg.host, insecure=True),), platform=Platform("linux", "amd64"),
                       **kwargs)


def push(reg: Registry, layout_dir: Path, name: str, tag: str = "latest", *, all_images: bool = False) -> None:
    if all_images:
        result = skopeo("copy", "--all", "--dest-tls-verify=false", f"oci:{layout_dir}:{tag}",
                        f"docker://{reg.ref(name, tag)}")
        assert result.returncode == 0, result.stderr
    else:
        skopeo_push(f"oci:{layout_dir}:{tag}", reg, name, tag)


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def assert_nothing_left(bundle: Path) -> None:
    assert list(bundle.iterdir()) == [], "the bundle must stay empty after a failed pull"
    assert sorted(p.name for p in bundle.parent.iterdir()) == [bundle.name], "no work files may remain"
    assert not Path("/", ESCAPE).exists()


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    path = tmp_path / "pulls" / "bundle"
    path.parent.mkdir()
    return path


async def test_pull_layers_whiteouts_links_modes(registry: Registry, tmp_path: Path, bundle: Path) -> None:
    layout = build_layout(tmp_path / "layout", LAYERS)
    push(registry, layout.path, "test/basic")
    digest = await pull_image(registry.ref("test/basic"), bundle, config=insecure(registry), decrypt=None)
    assert digest == layout.manifest_digest
    rootfs = bundle / "rootfs"
    assert tree(rootfs) == EXPECTED
    assert (rootfs / "bin/su").stat().st_ino == (rootfs / "bin/su-link").stat().st_ino
    assert (rootfs / "etc/passwd").stat().st_mtime == 1_700_000_000
    assert names(bundle) == ["config.json", "rootfs"]
    assert names(bundle.parent) == ["bundle"]
    assert json.loads((bundle / "config.json").read_bytes())["process"]["args"] == ["/bin/true"]
    with pytest.raises(MalformedRequestError, match="already exists"):
        await pull_image(registry.ref("test/basic"), bundle, config=insecure(registry), decrypt=None)
    assert tree(rootfs) == EXPECTED


async def test_pull_by_digest_with_work_dir(registry: Registry, tmp_path: Path, bundle: Path) -> None:
    """skopeo compresses plain tar layers on the way to a registry, so the manifest digest is read back."""
    layout = build_layout(tmp_path / "layout", LAYERS, compress=False, tag="v1")
    push(registry, layout.path, "test/plain", "v1")
    inspected = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{registry.ref('test/plain', 'v1')}")
    digest = sha256_digest(inspected.stdout.encode())
    work = tmp_path / "work"
    ref = f"{registry.host}/test/plain:v1@{digest}"
    assert await pull_image(ref, bundle, config=insecure(registry, work_dir=work), decrypt=None) == digest
    assert tree(bundle / "rootfs") == EXPECTED
    assert list(work.iterdir()) == []


async def test_missing_tag(registry: Registry, tmp_path: Path, bundle: Path) -> None:
    push(registry, build_layout(tmp_path / "layout", LAYERS[:1]).path, "test/tags")
    with pytest.raises(ImageNotFoundError, match="nope"):
        await pull_image(registry.ref("test/tags", "nope"), bundle, config=insecure(registry), decrypt=None)
    with pytest.raises(ImageNotFoundError, match="test/absent"):
        await pull_image(registry.ref("test/absent"), bundle, config=insecure(registry), decrypt=None)
    assert_nothing_left(bundle)


async def test_registry_down(tmp_path: Path, bundle: Path) -> None:
    reg = Registry(tmp_path / "down").start()
    push(reg, build_layout(tmp_path / "layout", LAYERS[:1]).path, "test/down")
    reg.stop()
    with pytest.raises(UpstreamError, match=reg.host):
        await pull_image(reg.ref("test/down"), bundle, config=insecure(reg), decrypt=None)
    assert_nothing_left(bundle)


async def test_loopback_needs_insecure_rule(registry: Registry, tmp_path: Path, bundle: Path) -> None:
    """Without a rule the puller speaks HTTPS, which the plain-HTTP registry cannot answer."""
    push(registry, build_layout(tmp_path / "layout", LAYERS[:1]).path, "test/tls")
    with pytest.raises(UpstreamError, match=registry.host):
        await pull_image(registry.ref("test/tls"), bundle, config=ImageConfig(connect_timeout=10), decrypt=None)
    assert_nothing_left(bundle)


def _blob_in_registry(reg: Registry, digest: str) -> Path:
    hexd = digest.removeprefix("sha256:")
    return reg.workdir / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexd[:2] / hexd / "data"


async def test_tampered_layer(tmp_path: Path, bundle: Path) -> None:
    reg = Registry(tmp_path / "tamper").start()
    try:
        layout = build_layout(tmp_path / "layout", LAYERS)
        push(reg, layout.path, "test/tamper")
        stored = _blob_in_registry(reg, str(layout.layers[1]["digest"]))
        data = bytearray(stored.read_bytes())
        data[len(data) // 2] ^= 0x01
        stored.write_bytes(bytes(data))
        with pytest.raises(ImageIntegrityError, match=str(layout.layers[1]["digest"])):
            await pull_image(reg.ref("test/tamper"), bundle, config=insecure(reg), decrypt=None)
        assert_nothing_left(bundle)
    finally:
        reg.stop()


# --- hand-made layouts ---------------------------------------------------------


def write_layout(path: Path, tars: list[bytes], *, tag: str = "latest", media_types: list[str] | None = None,
                 blobs: list[bytes] | None = None, annotations: dict[str, str] | None = None,
                 diff_ids: list[str] | None = None) -> str:
    """An OCI layout whose layers are the given raw tarballs (gzip-compressed unless `blobs` replaces them)."""
    blobs_dir = path / "blobs" / "sha256"
    blobs_dir.mkdir(parents=True, exist_ok=True)
    (path / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))

    def put(data: bytes) -> dict[str, Any]:
        (blobs_dir / sha256_digest(data).removeprefix("sha256:")).write_bytes(data)
        return {"digest": sha256_digest(data), "size": len(data)}

    layer_blobs = blobs or [gzip.compress(t, mtime=0) for t in tars]
    types = media_types or [MEDIA_LAYER_GZIP] * len(tars)
    layers = [{"mediaType": m, **put(b)} for m, b in zip(types, layer_blobs, strict=True)]
    config = {"architecture": "amd64", "os": "linux",
              "rootfs": {"type": "layers", "diff_ids": diff_ids or [sha256_digest(t) for t in tars]}}
    manifest: dict[str, Any] = {"schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
                                "config": {"mediaType": MEDIA_CONFIG, **put(json.dumps(config).encode())},
                                "layers": layers}
    if annotations:
        manifest["annotations"] = annotations
    manifest_blob = json.dumps(manifest).encode()
    descriptor = {"mediaType": MEDIA_MANIFEST, **put(manifest_blob), "annotations": {"org.opencontainers.image.ref.name": tag}}
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [descriptor]}))
    return sha256_digest(manifest_blob)


def raw_tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def info(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", mode: int = 0o644) -> tarfile.TarInfo:
    entry = tarfile.TarInfo(name)
    entry.type, entry.linkname, entry.mode = kind, linkname, mode
    return entry


MALICIOUS: dict[str, Callable[[], bytes]] = {
    "dotdot": lambda: raw_tar((info(f"../{ESCAPE}"), b"x")),
    "nested-dotdot": lambda: raw_tar((info("a/../../" + ESCAPE), b"x")),
    "absolute": lambda: raw_tar((info(f"/{ESCAPE}"), b"x")),
    "symlink-then-through": lambda: raw_tar((info("a", tarfile.SYMTYPE, "/"), None), (info(f"a/{ESCAPE}"), b"x")),
    "symlink-dir-escape": lambda: raw_tar((info("d", tarfile.SYMTYPE, "../.."), None),
                                          (info(f"d/{ESCAPE}", tarfile.DIRTYPE, mode=0o755), None)),
    "hardlink-out": lambda: raw_tar((info("h", tarfile.LNKTYPE, "../outside"), None)),
    "hardlink-to-dir": lambda: raw_tar((info("d", tarfile.DIRTYPE, mode=0o755), None), (info("h", tarfile.LNKTYPE, "d"), None)),
    "hardlink-to-symlink": lambda: raw_tar((info("s", tarfile.SYMTYPE, "/etc/shadow"), None),
                                           (info("h", tarfile.LNKTYPE, "s"), None)),
    "hardlink-through-symlink": lambda: raw_tar((info("s", tarfile.SYMTYPE, "/etc"), None),
                                                (info("h", tarfile.LNKTYPE, "s/passwd"), None)),
    "char-device": lambda: raw_tar((info("null", tarfile.CHRTYPE), None)),
    "block-device": lambda: raw_tar((info("sda", tarfile.BLKTYPE), None)),
    "fifo": lambda: raw_tar((info("fifo", tarfile.FIFOTYPE), None)),
    "whiteout-through-symlink": lambda: raw_tar((info("s", tarfile.SYMTYPE, "/"), None), (info(f"s/.wh.{ESCAPE}"), b"")),
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
async def test_malicious_layer(registry: Registry, tmp_path: Path, bundle: Path, case: str) -> None:
    (tmp_path / "outside").write_bytes(b"outside\n")
    good = raw_tar((info("ok", mode=0o644), b"ok"))
    write_layout(tmp_path / "layout", [good, MALICIOUS[case]()])
    push(registry, tmp_path / "layout", f"test/evil-{case}")
    with pytest.raises(UnsafeImageError):
        await pull_image(registry.ref(f"test/evil-{case}"), bundle, config=insecure(registry), decrypt=None)
    assert_nothing_left(bundle)
    assert names(tmp_path) == ["layout", "outside", "pulls"]
    assert (tmp_path / "outside").read_bytes() == b"outside\n"


async def test_too_many_entries_and_bytes(registry: Registry, tmp_path: Path, bundle: Path) -> None:
    tar = raw_tar(*[(info(f"f{i}"), b"0123456789") for i in range(20)])
    write_layout(tmp_path / "layout", [tar])
    push(registry, tmp_path / "layout", "test/many")
    with pytest.raises(UnsafeImageError, match="more than 10 entries"):
        await pull_image(registry.ref("test/many"), bundle, config=insecure(registry, max_layer_entries=10), decrypt=None)
    with pytest.raises(UnsafeImageError, match="100 byte limit"):
        await pull_image(registry.ref("test/many"), bundle,
                         config=insecure(registry, max_layer_uncompressed_bytes=100), decrypt=None)
    with pytest.raises(UnsafeImageError, match="over the 50 limit"):
        await pull_image(registry.ref("test/many"), bundle, config=insecure(registry, max_layer_bytes=50), decrypt=None)
    assert_nothing_left(bundle)


async def test_oversize_manifest(registry: Registry, tmp_path: Path, bundle: Path) -> None:
    write_layout(tmp_path / "layout", [raw_tar((info("ok"), b"ok"))], annotations={"padding": "x" * 8192})
    push(registry, tmp_path / "layout", "test/big-manifest")
    with pytest.raises(UnsafeImageError, match="manifest"):
        await pull_image(registry.ref("test/big-manifest"), bundle,
                         config=insecure(registry, max_manifest_bytes=4096), decrypt=None)
    assert_nothing_left(bundle)


async def test_wrong_diff_id(registry: Registry, tmp_path: Path, bundle: Path) -> None:
    tar = raw_tar((info("ok"), b"ok"))
    write_layout(tmp_path / "layout", [tar], diff_ids=[sha256_digest(b"something else")])
    push(registry, tmp_path / "layout", "test/diffid")
    with pytest.raises(ImageIntegrityError, match="config says"):
        await pull_image(registry.ref("test/diffid"), bundle, config=insecure(registry), decrypt=None)
    assert_nothing_left(bundle)


async def test_index_picks_linux_amd64(registry: Registry, tmp_path: Path, bundle: Path) -> None:
    arm = build_layout(tmp_path / "arm", [[file("arch", b"arm64\n")]])
    amd = build_layout(tmp_path / "amd", [[file("arch", b"amd64\n")]])
    for blob in (amd.path / "blobs" / "sha256").iterdir():
        shutil.copy(blob, arm.path / "blobs" / "sha256" / blob.name)

    def entry(layout_dir: Path, digest: str, arch: str, variant: str | None = None) -> dict[str, Any]:
        size = (layout_dir / "blobs" / "sha256" / digest.removeprefix("sha256:")).stat().st_size
        platform = {"architecture": arch, "os": "linux", **({"variant": variant} if variant else {})}
        return {"mediaType": MEDIA_MANIFEST, "digest": digest, "size": size, "platform": platform}

    index = {"schemaVersion": 2, "mediaType": MEDIA_INDEX,
             "manifests": [entry(arm.path, arm.manifest_digest, "arm64", "v8"), entry(amd.path, amd.manifest_digest, "amd64")]}
    index_blob = json.dumps(index).encode()
    (arm.path / "blobs" / "sha256" / sha256_digest(index_blob).removeprefix("sha256:")).write_bytes(index_blob)
    (arm.path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": MEDIA_INDEX, "digest": sha256_digest(index_blob), "size": len(index_blob),
         "annotations": {"org.opencontainers.image.ref.name": "multi"}}]}))
    push(registry, arm.path, "test/multi", "multi", all_images=True)
    digest = await pull_image(registry.ref("test/multi", "multi"), bundle, config=insecure(registry), decrypt=None)
    assert digest == amd.manifest_digest
    assert (bundle / "rootfs" / "arch").read_bytes() == b"amd64\n"
    other = bundle.parent / "arm-bundle"
    config = insecure(registry)
    config = ImageConfig(registry_rules=config.registry_rules, platform=Platform("linux", "arm64", "v8"))
    assert await pull_image(registry.ref("test/multi", "multi"), other, config=config, decrypt=None) == arm.manifest_digest
    assert (other / "rootfs" / "arch").read_bytes() == b"arm64\n"


# --- encrypted layers: the decrypt hook is the seam ------------------------------


def _scramble(data: bytes) -> bytes:
    return bytes(b ^ 0x5A for b in data)


async def test_encrypted_layer_needs_a_hook(registry: Registry, tmp_path: Path, bundle: Path) -> None:
    plain_tar = raw_tar((info("secret.txt", mode=0o600), b"top secret\n"))
    base = raw_tar((info("base.txt"), b"base\n"))
    top_tar = raw_tar((info("top.txt"), b"uncompressed\n"))
    plain_blob = gzip.compress(plain_tar, mtime=0)
    write_layout(tmp_path / "layout", [base, plain_tar, top_tar],
                 media_types=[MEDIA_LAYER_GZIP, MEDIA_LAYER_GZIP + "+encrypted", MEDIA_LAYER_TAR + "+encrypted"],
                 blobs=[gzip.compress(base, mtime=0), _scramble(plain_blob), _scramble(top_tar)])
    push(registry, tmp_path / "layout", "test/encrypted")
    with pytest.raises(UnsafeImageError, match="encrypted and no key provider"):
        await pull_image(registry.ref("test/encrypted"), bundle, config=insecure(registry), decrypt=None)
    assert_nothing_left(bundle)

    seen: list[dict[str, Any]] = []

    async def unscramble(descriptor: dict[str, Any], encrypted: Path, plain: Path) -> None:
        seen.append(descriptor)
        await asyncio.to_thread(lambda: plain.write_bytes(_scramble(encrypted.read_bytes())))

    await pull_image(registry.ref("test/encrypted"), bundle, config=insecure(registry), decrypt=unscramble)
    assert [d["mediaType"] for d in seen] == [MEDIA_LAYER_GZIP + "+encrypted", MEDIA_LAYER_TAR + "+encrypted"]
    assert tree(bundle / "rootfs") == {"base.txt": ("file", 0o644, _sha(b"base\n")),
                                       "secret.txt": ("file", 0o600, _sha(b"top secret\n")),
                                       "top.txt": ("file", 0o644, _sha(b"uncompressed\n"))}


async def test_wrong_decryption_is_caught_by_diff_id(registry: Registry, tmp_path: Path, bundle: Path) -> None:
    plain_tar = raw_tar((info("secret.txt"), b"top secret\n"))
    write_layout(tmp_path / "layout", [plain_tar], media_types=[MEDIA_LAYER_GZIP + "+encrypted"],
                 blobs=[_scramble(gzip.compress(plain_tar, mtime=0))])
    push(registry, tmp_path / "layout", "test/encrypted-bad")

    async def wrong(descriptor: dict[str, Any], encrypted: Path, plain: Path) -> None:
        forged = gzip.compress(raw_tar((info("secret.txt"), b"forged\n")), mtime=0)
        await asyncio.to_thread(plain.write_bytes, forged)

    with pytest.raises(ImageIntegrityError, match="config says"):
        await pull_image(registry.ref("test/encrypted-bad"), bundle, config=insecure(registry), decrypt=wrong)
    assert_nothing_left(bundle)


# --- config.json: the runtime spec next to the rootfs ---------------------------


IMAGE_CONFIG = {"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hello"], "Env": ["PATH=/bin", "GREETING=hi"],
                "WorkingDir": "/srv", "Labels": {"app": "demo"}, "Volumes": {"/data": {}}, "StopSignal": "SIGINT"}


async def test_config_json_is_the_converted_image_config(registry: Registry, tmp_path: Path, bundle: Path) -> None:
    layout = build_layout(tmp_path / "layout", LAYERS[:1], config_extra={"config": IMAGE_CONFIG})
    push(registry, layout.path, "test/spec")
    await pull_image(registry.ref("test/spec"), bundle, config=insecure(registry), decrypt=None)
    written = bundle / "config.json"
    assert stat.S_IMODE(written.stat().st_mode) == 0o644
    spec = json.loads(written.read_bytes())
    assert spec["process"]["args"] == ["/bin/sh", "-c", "echo hello"]
    assert spec["process"]["env"] == ["PATH=/bin", "GREETING=hi"]
    assert spec["process"]["cwd"] == "/srv"
    assert spec["root"] == {"path": "rootfs", "readonly": True}
    assert spec["mounts"][0] == {"destination": "/data", "type": "tmpfs",
                                 "options": ["nosuid", "noexec", "nodev", "relatime", "rw"]}
    assert spec["annotations"]["app"] == "demo"
    assert spec["annotations"]["org.opencontainers.image.stopSignal"] == "SIGINT"
    config_blob = json.loads((layout.path / "blobs" / "sha256" / _config_digest(layout.path)).read_bytes())
    assert spec == runtime_config(config_blob)
    assert names(bundle) == ["config.json", "rootfs"]


def _config_digest(layout_dir: Path) -> str:
    config = read_manifest(layout_dir)["config"]
    assert isinstance(config, dict)
    return str(config["digest"]).removeprefix("sha256:")


def _claim(bundle: Path) -> None:
    """Another party's config.json in the bundle."""
    bundle.mkdir(exist_ok=True)
    (bundle / "config.json").write_bytes(b"theirs")


async def test_existing_config_json_is_refused_before_any_download(tmp_path: Path, bundle: Path) -> None:
    """The bundle is checked before the registry is contacted: an unreachable one does not matter."""
    _claim(bundle)
    unreachable = ImageConfig(registry_rules=(RegistryRule("127.0.0.1:9", insecure=True),))
    with pytest.raises(MalformedRequestError, match=r"config\.json already exists"):
        await pull_image("127.0.0.1:9/test/app", bundle, config=unreachable, decrypt=None)
    assert names(bundle) == ["config.json"]
    assert (bundle / "config.json").read_bytes() == b"theirs"
    assert names(bundle.parent) == ["bundle"]


@pytest.mark.parametrize(("extra", "message"), [
    ({"config": {"Cmd": "/bin/sh -c true"}}, "config.Cmd is not a list"),
    ({"os": "windows"}, "'windows' is not supported"),
    ({"config": {"Volumes": {"../escape": {}}}}, "not an absolute path"),
])
async def test_bad_image_config_leaves_nothing(registry: Registry, tmp_path: Path, bundle: Path,
                                               extra: dict[str, object], message: str) -> None:
    layout = build_layout(tmp_path / "layout", LAYERS[:1], config_extra=extra)
    name = f"test/bad-config-{sha256_digest(json.dumps(extra).encode())[7:19]}"
    push(registry, layout.path, name)
    with pytest.raises(UnsafeImageError, match=message):
        await pull_image(registry.ref(name), bundle, config=insecure(registry), decrypt=None)
    assert_nothing_left(bundle)


async def test_config_json_appearing_during_the_pull(registry: Registry, tmp_path: Path, bundle: Path) -> None:
    """Someone else's config.json wins: it is kept, and the freshly unpacked rootfs is removed again."""
    plain_tar = raw_tar((info("secret.txt"), b"top secret\n"))
    write_layout(tmp_path / "layout", [plain_tar], media_types=[MEDIA_LAYER_GZIP + "+encrypted"],
                 blobs=[_scramble(gzip.compress(plain_tar, mtime=0))])
    push(registry, tmp_path / "layout", "test/race")

    async def racing(descriptor: dict[str, Any], encrypted: Path, plain: Path) -> None:
        _claim(bundle)
        await asyncio.to_thread(lambda: plain.write_bytes(_scramble(encrypted.read_bytes())))

    with pytest.raises(MalformedRequestError, match=r"config\.json appeared during the pull"):
        await pull_image(registry.ref("test/race"), bundle, config=insecure(registry), decrypt=racing)
    assert names(bundle) == ["config.json"]
    assert (bundle / "config.json").read_bytes() == b"theirs"
    assert names(bundle.parent) == ["bundle"]
