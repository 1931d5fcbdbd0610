"""Read one image from an OCI image layout and write a new layout, for `trustee image encrypt`.

An OCI image layout (image-spec `image-layout.md`) is a directory with
`oci-layout`, `index.json` and `blobs/<alg>/<hex>`. skopeo names one with
`oci:DIR[:TAG]` (the path ends at the first `:`) and tags a manifest with
the `org.opencontainers.image.ref.name` annotation of its index entry.

Reading picks the manifest tagged TAG; without TAG, the one tagged
`latest`, else the only manifest of the layout. A nested index (a
multi-platform image) and Docker schema 2 manifests are refused with a
hint. Every digest is checked against `sha256:<64 hex>` before it becomes a
path, and the index and manifest are size- and depth-bounded.

`LayoutWriter` fills a new directory (the caller's temporary one) blob by
blob; `finish` writes the manifest, `index.json` and `oci-layout`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from trustee_common.bounded import loads_json
from trustee_common.errors import ConfigError, ImageIntegrityError, ImageNotFoundError, MalformedRequestError, UnsafeImageError

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
REF_NAME = "org.opencontainers.image.ref.name"
DEFAULT_TAG = "latest"
#: The distribution spec's manifest limit; an index is no bigger in practice.
MAX_DOCUMENT_BYTES = 4 * 1024 * 1024
MAX_DOCUMENT_DEPTH = 32
MAX_LAYERS = 256
_SHA256 = re.compile(r"^sha256:[0-9a-f]{64}$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class LayoutRef:
    """`oci:DIR[:TAG]` split; `tag` None when not given."""

    path: Path
    tag: str | None

    @classmethod
    def parse(cls, text: str) -> LayoutRef:
        if not text.startswith("oci:") or len(text) == len("oci:"):
            raise ValueError(f"{text!r} is not oci:DIR[:TAG]")
        path, _, tag = text.removeprefix("oci:").partition(":")
        if not path or (tag and not _TAG.fullmatch(tag)):
            raise ValueError(f"{text!r} is not oci:DIR[:TAG] (a tag is letters, digits, '_', '.', '-', at most 128)")
        return cls(Path(path), tag or None)


@dataclass(frozen=True)
class SourceImage:
    """The chosen manifest: its index entry, its parsed JSON, and the tag it was found under."""

    root: Path
    entry: dict[str, Any]
    manifest: dict[str, Any]
    tag: str

    @property
    def layers(self) -> list[dict[str, Any]]:
        return list(self.manifest["layers"])

    def blob(self, digest: object, what: str) -> Path:
        return blob_path(self.root, digest, what)


def blob_path(root: Path, digest: object, what: str) -> Path:
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise MalformedRequestError(f"{what}: digest {str(digest)[:80]!r} is not sha256:<64 hex> (only sha256 layouts are supported)")
    return root / "blobs" / "sha256" / digest.removeprefix("sha256:")


def _read_document(path: Path, what: str) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_DOCUMENT_BYTES + 1)
    except FileNotFoundError:
        raise ImageNotFoundError(f"{what}: {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_DOCUMENT_BYTES:
        raise UnsafeImageError(f"{what} {path}: larger than {MAX_DOCUMENT_BYTES} bytes")
    doc = loads_json(data, f"{what} {path}", max_bytes=MAX_DOCUMENT_BYTES, max_depth=MAX_DOCUMENT_DEPTH)
    if not isinstance(doc, dict):
        raise MalformedRequestError(f"{what} {path}: not a JSON object")
    return doc


def _entries(index: dict[str, Any], where: Path) -> list[dict[str, Any]]:
    entries = index.get("manifests")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise MalformedRequestError(f"{where}/index.json: `manifests` is not a list of descriptors")
    return entries


def _tag_of(entry: dict[str, Any]) -> str | None:
    annotations = entry.get("annotations")
    tag = annotations.get(REF_NAME) if isinstance(annotations, dict) else None
    return tag if isinstance(tag, str) else None


def _choose(entries: list[dict[str, Any]], ref: LayoutRef) -> tuple[dict[str, Any], str]:
    tagged = {_tag_of(e): e for e in entries if _tag_of(e) is not None}
    wanted = ref.tag or DEFAULT_TAG
    if wanted in tagged:
        return tagged[wanted], wanted
    if ref.tag is None and len(entries) == 1:
        return entries[0], DEFAULT_TAG
    known = ", ".join(sorted(str(t) for t in tagged)) or "none"
    raise ImageNotFoundError(f"no image tagged {wanted!r} in the layout {ref.path} (tags: {known})")


def _check_manifest_type(media_type: object, where: str) -> None:
    if media_type in (MEDIA_INDEX, MEDIA_DOCKER_LIST):
        raise MalformedRequestError(f"{where} is a multi-platform image index; copy one platform into a layout first "
                                    "(skopeo copy --override-arch ARCH --override-os OS ...)")
    if media_type == MEDIA_DOCKER_MANIFEST:
        raise MalformedRequestError(f"{where} is a Docker schema 2 manifest; convert it first (skopeo copy --format oci ...)")
    if media_type not in (MEDIA_MANIFEST, None):
        raise MalformedRequestError(f"{where} has media type {str(media_type)[:100]!r}, not an OCI image manifest")


def read_image(ref: LayoutRef) -> SourceImage:
    """The image `ref` names, its manifest checked against its index digest."""
    if not (ref.path / "index.json").is_file():
        raise ImageNotFoundError(f"{ref.path} is not an OCI image layout (no index.json)")
    entry, tag = _choose(_entries(_read_document(ref.path / "index.json", "index"), ref.path), ref)
    where = f"the image tagged {tag!r} in {ref.path}"
    _check_manifest_type(entry.get("mediaType"), where)
    path = blob_path(ref.path, entry.get("digest"), where)
    manifest = _read_document(path, f"manifest of {where}")
    if "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest() != entry["digest"]:
        raise ImageIntegrityError(f"manifest of {where}: its blob does not match its digest {entry['digest']}")
    _check_manifest_type(manifest.get("mediaType", MEDIA_MANIFEST), where)
    layers = manifest.get("layers")
    if not isinstance(layers, list) or not all(isinstance(d, dict) for d in layers) or not isinstance(manifest.get("config"), dict):
        raise MalformedRequestError(f"manifest of {where}: `config` or `layers` is missing or malformed")
    if not 0 < len(layers) <= MAX_LAYERS:
        raise UnsafeImageError(f"manifest of {where}: {len(layers)} layers (1 to {MAX_LAYERS} can be encrypted)")
    return SourceImage(ref.path, entry, manifest, tag)


class HashingWriter:
    """A binary sink that writes to `out` and keeps the sha256 and size of what went through."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out, self.size, self._hash = out, 0, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        self.size += len(data)
        return self.out.write(data)

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


class LayoutWriter:
    """Blobs, manifest and index of a new layout under `root` (an empty directory)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.blobs.mkdir(parents=True)

    def staging(self, name: str) -> Path:
        return self.blobs / f".{name}.partial"

    def commit(self, staged: Path, digest: str) -> None:
        os.replace(staged, blob_path(self.root, digest, "new blob"))

    def copy_blob(self, source: Path, descriptor: dict[str, Any], what: str) -> None:
        """Copy a blob, checking it against its descriptor's digest and size."""
        staged = self.staging("copy")
        with source.open("rb") as src, staged.open("wb") as dst:
            sink = HashingWriter(dst)
            shutil.copyfileobj(src, sink)
        if sink.digest != descriptor.get("digest") or sink.size != descriptor.get("size"):
            raise ImageIntegrityError(f"{what}: the blob is {sink.digest} ({sink.size} bytes), its descriptor says "
                                      f"{descriptor.get('digest')} ({descriptor.get('size')} bytes)")
        self.commit(staged, sink.digest)

    def finish(self, manifest: dict[str, Any], entry: dict[str, Any], tag: str) -> str:
        """Write the manifest blob, `index.json` (one entry tagged `tag`) and `oci-layout`; the manifest digest."""
        body = json.dumps(manifest, separators=(",", ":")).encode()
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        blob_path(self.root, digest, "manifest").write_bytes(body)
        kept = {k: entry[k] for k in ("platform",) if k in entry}
        index = {"schemaVersion": 2, "mediaType": MEDIA_INDEX,
                 "manifests": [{"mediaType": manifest.get("mediaType", MEDIA_MANIFEST), "digest": digest, "size": len(body),
                                **kept, "annotations": {REF_NAME: tag}}]}
        (self.root / "index.json").write_text(json.dumps(index, separators=(",", ":")))
        (self.root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
        return digest
