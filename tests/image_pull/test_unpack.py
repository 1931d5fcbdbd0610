"""Layer application on local files: whiteout order, replacing entries, ownership, decompression errors."""

from __future__ import annotations

import gzip
import os
import tarfile
from pathlib import Path

import pytest

from guest.image.unpack import LayerLimits, apply_layer, decompress_layer, layer_compression
from tests.image_pull.test_pull import info, raw_tar
from tests.oci_layouts import sha256_digest, tree
from trustee_common.errors import UnsafeImageError

LIMITS = LayerLimits(max_entries=1000, max_bytes=1 << 20)


def apply(tmp_path: Path, rootfs: Path, *layers: bytes) -> None:
    rootfs.mkdir(exist_ok=True)
    for number, layer in enumerate(layers):
        path = tmp_path / f"layer{number}.tar"
        path.write_bytes(layer)
        apply_layer(path, rootfs, LIMITS)


def dir_info(name: str, mode: int = 0o755) -> tarfile.TarInfo:
    return info(name, tarfile.DIRTYPE, mode=mode)


def test_file_over_a_lower_symlink_replaces_the_link(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(b"untouched")
    rootfs = tmp_path / "rootfs"
    apply(tmp_path, rootfs, raw_tar((info("x", tarfile.SYMTYPE, str(outside)), None)),
          raw_tar((info("x"), b"new")))
    assert outside.read_bytes() == b"untouched"
    assert not (rootfs / "x").is_symlink()
    assert (rootfs / "x").read_bytes() == b"new"


def test_opaque_marker_first_or_last_keeps_same_layer_entries(tmp_path: Path) -> None:
    lower = raw_tar((dir_info("d"), None), (info("d/old"), b"o"), (dir_info("d/sub"), None), (info("d/sub/old"), b"o"),
                    (dir_info("e"), None), (info("e/old"), b"o"))
    upper = raw_tar((info("d/.wh..wh..opq"), b""), (info("d/new"), b"n"),
                    (info("e/sub2/new"), b"n"), (info("e/sub2/x"), b"x"), (info("e/.wh..wh..opq"), b""),
                    (info("d/sub/kept"), b"k"))
    rootfs = tmp_path / "rootfs"
    apply(tmp_path, rootfs, lower, upper)
    assert sorted(tree(rootfs)) == ["d", "d/new", "d/sub", "d/sub/kept", "e", "e/sub2", "e/sub2/new", "e/sub2/x"]


def test_whiteouts_and_type_changes(tmp_path: Path) -> None:
    lower = raw_tar((dir_info("gone"), None), (info("gone/a/b"), b"b"), (dir_info("was-dir"), None),
                    (info("was-dir/f"), b"f"), (info("was-file"), b"f"), (info("base"), b"base"))
    upper = raw_tar((info(".wh.gone"), b""), (info("was-dir"), b"now a file"), (dir_info("was-file", 0o700), None),
                    (info("link", tarfile.LNKTYPE, "base"), None), (info(".wh.never-existed"), b""),
                    (info(".wh..wh.plnk"), b""))
    rootfs = tmp_path / "rootfs"
    apply(tmp_path, rootfs, lower, upper)
    assert tree(rootfs) == {
        "was-dir": ("file", 0o644, sha256_digest(b"now a file").removeprefix("sha256:")),
        "was-file": ("dir", 0o700, ""),
        "base": ("file", 0o644, sha256_digest(b"base").removeprefix("sha256:")),
        "link": ("file", 0o644, sha256_digest(b"base").removeprefix("sha256:")),
    }
    assert (rootfs / "link").stat().st_ino == (rootfs / "base").stat().st_ino


@pytest.mark.skipif(os.geteuid() != 0, reason="ownership is applied only as root")
def test_ownership_and_directory_mtime(tmp_path: Path) -> None:
    owned = info("owned", mode=0o4750)
    owned.uid, owned.gid = 1234, 5678
    directory = dir_info("dir", 0o555)
    directory.mtime = 1_600_000_000
    rootfs = tmp_path / "rootfs"
    apply(tmp_path, rootfs, raw_tar((directory, None), (info("dir/f"), b"f"), (owned, b"x")))
    st = (rootfs / "owned").stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1234, 5678, 0o4750)
    assert (rootfs / "dir").stat().st_mtime == 1_600_000_000
    assert (rootfs / "dir").stat().st_mode & 0o7777 == 0o555


def test_decompress_checks(tmp_path: Path) -> None:
    tar = raw_tar((info("a"), b"a"))
    (tmp_path / "ok.gz").write_bytes(gzip.compress(tar))
    assert decompress_layer(tmp_path / "ok.gz", tmp_path / "ok.tar", "gzip", 1 << 20) == sha256_digest(tar)
    (tmp_path / "bad.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(UnsafeImageError, match="not valid gzip"):
        decompress_layer(tmp_path / "bad.gz", tmp_path / "bad.tar", "gzip", 1 << 20)
    (tmp_path / "bomb.gz").write_bytes(gzip.compress(b"\0" * (1 << 20)))
    with pytest.raises(UnsafeImageError, match="1000 byte limit"):
        decompress_layer(tmp_path / "bomb.gz", tmp_path / "bomb.tar", "gzip", 1000)
    with pytest.raises(UnsafeImageError, match="not supported"):
        layer_compression("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip")
    assert layer_compression("application/vnd.oci.image.layer.v1.tar+zstd+encrypted") == "zstd"


def test_zstd_layers_decompress_and_bad_zstd_is_refused(tmp_path: Path) -> None:
    import zstandard

    tar = b"".join(bytes([i % 251]) for i in range(300_000))
    (tmp_path / "l.zst").write_bytes(zstandard.ZstdCompressor(level=3).compress(tar))
    digest = decompress_layer(tmp_path / "l.zst", tmp_path / "l.tar", "zstd", 1 << 20)
    assert (tmp_path / "l.tar").read_bytes() == tar and digest == sha256_digest(tar)
    with pytest.raises(UnsafeImageError, match="more than the 1000 byte limit"):
        decompress_layer(tmp_path / "l.zst", tmp_path / "small.tar", "zstd", 1000)
    (tmp_path / "bad.zst").write_bytes(b"\x28\xb5\x2f\xfd" + b"garbage" * 10)
    with pytest.raises(UnsafeImageError, match="not valid zstd data"):
        decompress_layer(tmp_path / "bad.zst", tmp_path / "bad.tar", "zstd", 1 << 20)


def test_not_a_tar(tmp_path: Path) -> None:
    with pytest.raises(UnsafeImageError, match="not a valid tar"):
        apply(tmp_path, tmp_path / "rootfs", b"this is not a tar archive at all" * 20)
