"""Build small OCI image layouts for the image tests, and run a real registry.

`build_layout` writes an OCI image layout (`oci-layout`, `index.json`,
`blobs/sha256/...`) from layer specs: each layer is a list of `Entry`
(regular file with mode, directory, symlink, hard link, whiteout, opaque
whiteout), packed as a gzip or plain tarball in the order given. The image
config carries the layers' `diff_ids` as a real image would, so skopeo and
our puller see a complete image.

`Registry` starts Debian's `docker-registry` (the CNCF distribution
registry) on a loopback port with its storage in a temporary directory;
`skopeo_push` copies a layout into it with skopeo.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tests.ports import LOOPBACK, allocate_ports

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"

Kind = Literal["file", "dir", "symlink", "hardlink", "whiteout", "opaque"]


@dataclass(frozen=True)
class Entry:
    """One tar entry. `target` is the link target of a symlink or hard link."""

    path: str
    kind: Kind = "file"
    data: bytes = b""
    mode: int = 0o644
    target: str = ""


def file(path: str, data: bytes, mode: int = 0o644) -> Entry:
    return Entry(path, "file", data, mode)


def directory(path: str, mode: int = 0o755) -> Entry:
    return Entry(path, "dir", mode=mode)


def symlink(path: str, target: str) -> Entry:
    return Entry(path, "symlink", mode=0o777, target=target)


def hardlink(path: str, target: str) -> Entry:
    return Entry(path, "hardlink", target=target)


def whiteout(path: str) -> Entry:
    """Deletes `path` of a lower layer (`dir/.wh.name`)."""
    return Entry(path, "whiteout")


def opaque(directory_path: str) -> Entry:
    """Hides everything lower layers put in `directory_path` (`dir/.wh..wh..opq`)."""
    return Entry(directory_path, "opaque")


def layer_tar(entries: list[Entry]) -> bytes:
    """The uncompressed tarball of one layer (PAX format, fixed mtimes so builds are reproducible)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(_tar_name(entry))
            info.mtime, info.mode = 1_700_000_000, entry.mode
            payload = None
            if entry.kind == "file" or entry.kind in ("whiteout", "opaque"):
                payload = entry.data
                info.size = len(payload)
            elif entry.kind == "dir":
                info.type = tarfile.DIRTYPE
            elif entry.kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, entry.target
            else:
                info.type, info.linkname = tarfile.LNKTYPE, entry.target
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return out.getvalue()


def _tar_name(entry: Entry) -> str:
    if entry.kind == "whiteout":
        head, _, name = entry.path.rpartition("/")
        return f"{head}/.wh.{name}" if head else f".wh.{name}"
    if entry.kind == "opaque":
        return f"{entry.path.rstrip('/')}/.wh..wh..opq"
    return entry.path


@dataclass
class Layout:
    """A written layout: where it is, its tag, and the descriptors of what it holds."""

    path: Path
    tag: str
    manifest_digest: str
    layers: list[dict[str, object]] = field(default_factory=list)
    diff_ids: list[str] = field(default_factory=list)

    @property
    def ref(self) -> str:
        """The skopeo/`trustee image` transport reference `oci:DIR:TAG`."""
        return f"oci:{self.path}:{self.tag}"


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _write_blob(root: Path, data: bytes) -> str:
    digest = sha256_digest(data)
    blob = root / "blobs" / "sha256" / digest.removeprefix("sha256:")
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    return digest


def build_layout(path: Path, layers: list[list[Entry]], *, tag: str = "latest", compress: bool = True,
                 config_extra: dict[str, object] | None = None) -> Layout:
    """Write an OCI image layout at `path` holding one image of `layers` (bottom first) tagged `tag`."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    descriptors: list[dict[str, object]] = []
    diff_ids: list[str] = []
    for entries in layers:
        raw = layer_tar(entries)
        diff_ids.append(sha256_digest(raw))
        blob = gzip.compress(raw, mtime=0) if compress else raw
        descriptors.append({"mediaType": MEDIA_LAYER_GZIP if compress else MEDIA_LAYER_TAR,
                            "digest": _write_blob(path, blob), "size": len(blob)})
    config = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/true"]},
              "rootfs": {"type": "layers", "diff_ids": diff_ids}, **(config_extra or {})}
    config_blob = json.dumps(config).encode()
    manifest = {"schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
                "config": {"mediaType": MEDIA_CONFIG, "digest": _write_blob(path, config_blob), "size": len(config_blob)},
                "layers": descriptors}
    manifest_blob = json.dumps(manifest).encode()
    manifest_digest = _write_blob(path, manifest_blob)
    index = {"schemaVersion": 2, "manifests": [{"mediaType": MEDIA_MANIFEST, "digest": manifest_digest, "size": len(manifest_blob),
                                                "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    (path / "index.json").write_text(json.dumps(index))
    return Layout(path, tag, manifest_digest, descriptors, diff_ids)


def read_manifest(layout_dir: Path, tag: str = "latest") -> dict[str, object]:
    """The manifest tagged `tag` in a layout (as skopeo or `trustee image encrypt` wrote it)."""
    index = json.loads((layout_dir / "index.json").read_text())
    for desc in index["manifests"]:
        if desc.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            digest = desc["digest"].removeprefix("sha256:")
            return dict(json.loads((layout_dir / "blobs" / "sha256" / digest).read_bytes()))
    raise KeyError(f"no manifest tagged {tag!r} in {layout_dir}")


def tree(root: Path) -> dict[str, tuple[str, int, str]]:
    """Every path under `root` → (kind, permission bits, content or link target): to compare two rootfs."""
    result: dict[str, tuple[str, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            rel = str(full.relative_to(root))
            st = full.lstat()
            if full.is_symlink():
                result[rel] = ("symlink", 0, os.readlink(full))
            elif full.is_dir():
                result[rel] = ("dir", st.st_mode & 0o7777, "")
            else:
                result[rel] = ("file", st.st_mode & 0o7777, hashlib.sha256(full.read_bytes()).hexdigest())
    return result


class Registry:
    """Debian's `docker-registry` on a loopback port (plain HTTP), storage under `workdir`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = allocate_ports()[0]
        self.host = f"{LOOPBACK}:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Registry:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.workdir / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n"
        )
        with open(self.workdir / "registry.log", "wb") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen([shutil.which("docker-registry") or "docker-registry", "serve", str(config)],
                                         stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {(self.workdir / 'registry.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=2) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        raise RuntimeError("docker-registry did not answer within 30 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def ref(self, name: str, tag: str = "latest") -> str:
        """`127.0.0.1:PORT/name:tag`, as a guest names the image."""
        return f"{self.host}/{name}:{tag}"


def skopeo(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run skopeo with policy checks off (tests sign nothing) and TLS off for the loopback registry."""
    policy = Path(__file__).with_name("skopeo-policy.json")
    return subprocess.run(["skopeo", "--policy", str(policy), *args], capture_output=True, text=True, timeout=timeout, check=False)


def skopeo_push(source_ref: str, registry: Registry, name: str, tag: str = "latest") -> None:
    """Copy `source_ref` (e.g. `oci:DIR:TAG`) to the registry as `name:tag`, unchanged (encrypted layers stay encrypted)."""
    result = skopeo("copy", "--dest-tls-verify=false", source_ref, f"docker://{registry.ref(name, tag)}")
    if result.returncode != 0:
        raise RuntimeError(f"skopeo copy to the registry failed: {result.stderr.strip()}")
