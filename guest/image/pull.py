"""Pull an image from a registry into `<bundle>/rootfs`: the CDH `PullImage` work, with a decryption seam.

`pull_image(image_url, bundle_path, config=..., decrypt=...)`:

1. parses the reference and applies the registry rules (remapping, blocking,
   plain HTTP for insecure registries);
2. fetches the manifest (an index is resolved to `config.platform`) and the
   config blob, converts the config to the OCI runtime spec
   (guest/image/bundle.py), and checks the bounds: layer count, each layer's
   size, the sum of them, one `diff_id` per layer;
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
   renamed to `<bundle>/rootfs`, then the runtime spec, written to a
   temporary file, is linked to `<bundle>/config.json` (mode 0644), as
   image-rs writes it.

On any failure the partial tree, the downloaded blobs and the temporary spec
are removed, and a rootfs already renamed into place is removed again if
`config.json` cannot be published: there is either a complete verified
rootfs with its `config.json` or neither. An existing `<bundle>/rootfs` or
`<bundle>/config.json` is never overwritten: either one present before the
pull is an error before anything is downloaded. The return value is the
digest of the image manifest (the platform manifest when the reference
names an index).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from guest.image.bundle import BUNDLE_CONFIG, config_json, parse_image_config, runtime_config
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
    """Pull `image_url` into `bundle_path/rootfs` plus `bundle_path/config.json`; return the manifest digest."""
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
            image_config = parse_image_config(await client.fetch_config(_config_descriptor(manifest)))
            spec = config_json(runtime_config(image_config))
            layers = _layers(manifest, image_config, config)
            if decrypt is None and any(layer.encrypted for layer in layers):
                raise UnsafeImageError(f"image {reference} is encrypted and no key provider is configured")
            blobs = await _download(client, layers, work, config.max_concurrent_layer_downloads_per_image)
        partial = Path(tempfile.mkdtemp(prefix=f"{ROOTFS}.partial-", dir=bundle_path))
        os.chmod(partial, 0o755)  # noqa: S103 - a rootfs root is world-readable, layers may change it
        for layer in layers:
            await _apply(layer, blobs[layer.descriptor.digest], work, partial, config, decrypt)
        _publish(partial, rootfs, spec)
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
    for existing in (rootfs, bundle_path / BUNDLE_CONFIG):
        if os.path.lexists(existing):
            raise MalformedRequestError(f"{existing} already exists; an image is never unpacked over it")


def _config_descriptor(manifest: FetchedManifest) -> Descriptor:
    return parse_descriptor(manifest.document.get("config"), "manifest config")


def _layers(manifest: FetchedManifest, image_config: dict[str, Any], config: ImageConfig) -> list[_Layer]:
    """The manifest's layers paired with the config's diff_ids, every bound checked."""
    raw = manifest.document.get("layers")
    if not isinstance(raw, list):
        raise UnsafeImageError("image manifest has no 'layers' list")
    if len(raw) > config.max_layers:
        raise UnsafeImageError(f"image has {len(raw)} layers, over the {config.max_layers} limit")
    descriptors = [parse_descriptor(value, f"layer {number}") for number, value in enumerate(raw)]
    diff_ids = _diff_ids(image_config)
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


def _diff_ids(image_config: dict[str, Any]) -> list[str]:
    try:
        diff_ids = image_config["rootfs"]["diff_ids"]
    except (KeyError, TypeError) as exc:
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


def _publish(partial: Path, rootfs: Path, spec: bytes) -> None:
    """Put the finished tree, then its config.json, into place; neither over an existing one; both or neither."""
    fd, name = tempfile.mkstemp(prefix=f"{BUNDLE_CONFIG}.partial-", dir=rootfs.parent)
    staged = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), 0o644)
            out.write(spec)
        _rename_rootfs(partial, rootfs)
        try:
            os.link(staged, rootfs.parent / BUNDLE_CONFIG)
        except OSError as exc:
            remove_tree(rootfs)
            if exc.errno == errno.EEXIST:
                raise MalformedRequestError(f"{rootfs.parent / BUNDLE_CONFIG} appeared during the pull; "
                                            "it is not overwritten") from exc
            raise
    finally:
        staged.unlink()


def _rename_rootfs(partial: Path, rootfs: Path) -> None:
    """Rename the finished tree into place; never over an existing rootfs (even an empty directory)."""
    if os.path.lexists(rootfs):
        raise MalformedRequestError(f"{rootfs} appeared during the pull; it is not overwritten")
    try:
        os.rename(partial, rootfs)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise MalformedRequestError(f"{rootfs} appeared during the pull; it is not overwritten") from exc
        raise

