"""Pull an image from a registry into `<bundle>/rootfs`: the CDH `PullImage` work, with a decryption seam.

`pull_image(image_url, bundle_path, config=..., decrypt=...)`:

1. parses the reference and applies the registry rules (remapping, blocking,
   plain HTTP for insecure registries);
2. fetches the manifest (an index is resolved to `config.platform`) and the
   config blob, and checks the bounds: layer count, each layer's size, the
   sum of them, one `diff_id` per layer;
3. downloads the layers into a private work directory under
   `config.work_dir` (default: the bundle's parent), at most
   `max_concurrent_layer_downloads_per_image` at a time, each checked against
   its descriptor's size and digest;
4. for each layer whose media type ends in `+encrypted`, awaits the
   `decrypt` hook, which writes the plaintext blob (compressed as the media
   type without `+encrypted` says); no hook → UnsafeImageError;
5. decompresses each layer, checks the tar's sha256 against the config's
   `rootfs.diff_ids` (ImageIntegrityError), and applies it to
   `<bundle>/rootfs.partial-XXXX`; after the last layer that directory is
   renamed to `<bundle>/rootfs`.

On any failure the partial tree and the downloaded blobs are removed: there is
either a complete verified rootfs or none. An existing `<bundle>/rootfs` is
never overwritten. The return value is the digest of the image manifest (the
platform manifest when the reference names an index).

Upstream image-rs also writes `<bundle>/config.json`, an OCI runtime spec
converted from the image config; this module writes only the rootfs (the
kata agent builds the container's spec itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from guest.image.config import ImageConfig
from guest.image.reference import parse_reference
from guest.image.registry import Descriptor, FetchedManifest, RegistryClient, open_session, parse_descriptor
from guest.image.unpack import LayerLimits, apply_layer, decompress_layer, layer_compression, remove_tree
from trustee_common.errors import ImageIntegrityError, MalformedRequestError, UnsafeImageError, clip_repr

__all__ = ["ENCRYPTED_SUFFIX", "ImageConfig", "LayerDecrypter", "pull_image"]

ENCRYPTED_SUFFIX = "+encrypted"
ROOTFS = "rootfs"
_T = TypeVar("_T")


class LayerDecrypter(Protocol):
    """The decryption seam: turn one encrypted layer blob into its plaintext blob.

    `descriptor` is the layer's descriptor from the manifest as a dict
    (`mediaType`, `digest`, `size`, `annotations` holding the ocicrypt key
    packets); `encrypted` is the verified downloaded blob; the hook writes the
    plaintext blob to the new file `plain`, which the puller then decompresses
    and checks against the image config's `diff_id`. The hook raises a
    TrusteeError (ImageIntegrityError for a failed HMAC, etc.) to fail the pull.
    """

    def __call__(self, descriptor: dict[str, Any], encrypted: Path, plain: Path) -> Awaitable[None]: ...


@dataclass(frozen=True)
class _Layer:
    index: int
    descriptor: Descriptor
    diff_id: str

    @property
    def encrypted(self) -> bool:
        return self.descriptor.media_type.endswith(ENCRYPTED_SUFFIX)


async def pull_image(image_url: str, bundle_path: Path, *, config: ImageConfig,
                     decrypt: LayerDecrypter | None) -> str:
    """Pull `image_url` into `bundle_path/rootfs` and return the manifest digest (see the module docstring)."""
    reference, insecure = config.resolve(parse_reference(image_url))
    rootfs = bundle_path / ROOTFS
    _check_bundle(bundle_path, rootfs)
    work_root = config.work_dir or bundle_path.parent
    work_root.mkdir(mode=0o700, parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="image-pull-", dir=work_root))
    partial: Path | None = None
    try:
        async with open_session(config) as session:
            client = RegistryClient(session, reference, config, insecure=insecure)
            manifest = await client.fetch_manifest()
            layers = _layers(manifest, await client.fetch_config(_config_descriptor(manifest)), config)
            if decrypt is None and any(layer.encrypted for layer in layers):
                raise UnsafeImageError(f"image {reference} is encrypted and no key provider is configured")
            blobs = await _download(client, layers, work, config.max_concurrent_layer_downloads_per_image)
        partial = Path(tempfile.mkdtemp(prefix=f"{ROOTFS}.partial-", dir=bundle_path))
        os.chmod(partial, 0o755)  # noqa: S103 - a rootfs root is world-readable, layers may change it
        for layer in layers:
            await _apply(layer, blobs[layer.descriptor.digest], work, partial, config, decrypt)
        _publish(partial, rootfs)
        partial = None
        return manifest.digest
    finally:
        if partial is not None:
            remove_tree(partial)
        remove_tree(work)


def _check_bundle(bundle_path: Path, rootfs: Path) -> None:
    if not bundle_path.is_absolute():
        raise MalformedRequestError(f"bundle path {clip_repr(str(bundle_path))} is not absolute")
    try:
        bundle_path.mkdir(mode=0o755, parents=False, exist_ok=True)
    except OSError as exc:
        raise MalformedRequestError(f"bundle path {bundle_path} cannot be created: {exc.strerror}") from exc
    if os.path.lexists(rootfs):
        raise MalformedRequestError(f"{rootfs} already exists; an image is never unpacked over it")


def _config_descriptor(manifest: FetchedManifest) -> Descriptor:
    return parse_descriptor(manifest.document.get("config"), "manifest config")


def _layers(manifest: FetchedManifest, config_blob: bytes, config: ImageConfig) -> list[_Layer]:
    """The manifest's layers paired with the config's diff_ids, every bound checked."""
    raw = manifest.document.get("layers")
    if not isinstance(raw, list):
        raise UnsafeImageError("image manifest has no 'layers' list")
    if len(raw) > config.max_layers:
        raise UnsafeImageError(f"image has {len(raw)} layers, over the {config.max_layers} limit")
    descriptors = [parse_descriptor(value, f"layer {number}") for number, value in enumerate(raw)]
    diff_ids = _diff_ids(config_blob)
    if len(diff_ids) != len(descriptors):
        raise ImageIntegrityError(f"image has {len(descriptors)} layers but its config lists {len(diff_ids)} diff_ids")
    total = 0
    for number, descriptor in enumerate(descriptors):
        layer_compression(descriptor.media_type)
        if descriptor.size > config.max_layer_bytes:
            raise UnsafeImageError(f"layer {number} is {descriptor.size} bytes, over the {config.max_layer_bytes} limit")
        total += descriptor.size
    if total > config.max_image_bytes:
        raise UnsafeImageError(f"image layers hold {total} bytes, over the {config.max_image_bytes} limit")
    return [_Layer(number, descriptor, diff_id) for number, (descriptor, diff_id) in enumerate(zip(descriptors, diff_ids, strict=True))]


def _diff_ids(config_blob: bytes) -> list[str]:
    try:
        diff_ids = json.loads(config_blob)["rootfs"]["diff_ids"]
    except (ValueError, KeyError, TypeError) as exc:
        raise UnsafeImageError("image config has no rootfs.diff_ids") from exc
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) and d.startswith("sha256:") for d in diff_ids):
        raise UnsafeImageError("image config rootfs.diff_ids must be a list of sha256 digests")
    return diff_ids


async def _download(client: RegistryClient, layers: list[_Layer], work: Path, concurrency: int) -> dict[str, Path]:
    """Each distinct layer blob into `work`, `concurrency` at a time; the first failure cancels the rest."""
    unique = {layer.descriptor.digest: layer.descriptor for layer in layers}
    paths = {digest: work / f"blob-{digest.removeprefix('sha256:')}" for digest in unique}
    gate = asyncio.Semaphore(concurrency)

    async def fetch(descriptor: Descriptor) -> None:
        async with gate:
            await client.fetch_blob(descriptor, paths[descriptor.digest])

    tasks = [asyncio.create_task(fetch(descriptor)) for descriptor in unique.values()]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return paths


async def _apply(layer: _Layer, blob: Path, work: Path, rootfs: Path, config: ImageConfig,
                 decrypt: LayerDecrypter | None) -> None:
    media_type = layer.descriptor.media_type
    if layer.encrypted:
        assert decrypt is not None
        plain = work / f"plain-{layer.index}"
        await decrypt(dict(layer.descriptor.raw), blob, plain)
        if not plain.is_file():
            raise ImageIntegrityError(f"the decrypt hook wrote no plaintext for layer {layer.index}")
        blob, media_type = plain, media_type.removesuffix(ENCRYPTED_SUFFIX)
    tar = work / f"layer-{layer.index}.tar"
    diff_id = await _in_thread(decompress_layer, blob, tar, layer_compression(media_type),
                               config.max_layer_uncompressed_bytes)
    if diff_id != layer.diff_id:
        raise ImageIntegrityError(f"layer {layer.index} ({layer.descriptor.digest}) unpacks to {diff_id}, "
                                  f"the image config says {layer.diff_id}")
    limits = LayerLimits(config.max_layer_entries, config.max_layer_uncompressed_bytes)
    await _in_thread(apply_layer, tar, rootfs, limits)
    tar.unlink()
    if blob.name.startswith("plain-"):
        blob.unlink()


async def _in_thread(function: Callable[..., _T], *args: Any) -> _T:
    """Run blocking file work in a thread; if the pull is cancelled, wait for it to stop before cleanup runs."""
    task = asyncio.ensure_future(asyncio.to_thread(function, *args))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise


def _publish(partial: Path, rootfs: Path) -> None:
    """Rename the finished tree into place; never over an existing rootfs (even an empty directory)."""
    if os.path.lexists(rootfs):
        raise MalformedRequestError(f"{rootfs} appeared during the pull; it is not overwritten")
    try:
        os.rename(partial, rootfs)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise MalformedRequestError(f"{rootfs} appeared during the pull; it is not overwritten") from exc
        raise

