"""Encrypted layer descriptors: media types and annotations (containers/ocicrypt `spec`, `encryption.go`).

Encrypting a layer appends `+encrypted` to its media type, replaces its
digest and size with those of the ciphertext, and adds annotations:

- `org.opencontainers.image.enc.pubopts`: std base64 of the public options;
- `org.opencontainers.image.enc.keys.provider.attestation-agent`: std base64
  of an AnnotationPacket (the layer key wrapped under a KBS-held KEK);
- `org.opencontainers.image.enc.keys.jwe`: std base64 of a JWE for public-key
  recipients.

A key annotation may hold several values joined by `,`. Decrypting removes
the suffix, restores the plaintext digest and size, and drops every
`org.opencontainers.image.enc.*` annotation. The image config (its
`diff_ids`) never changes. Descriptors are plain dicts as parsed from a
manifest; these functions return new dicts. Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

from trustee_common.errors import MalformedRequestError
from trustee_common.ocicrypt.options import PublicLayerOptions

ENCRYPTED_SUFFIX = "+encrypted"
ANNOTATION_PREFIX = "org.opencontainers.image.enc."
PUBOPTS_ANNOTATION = "org.opencontainers.image.enc.pubopts"
PROVIDER_ANNOTATION = "org.opencontainers.image.enc.keys.provider.attestation-agent"
JWE_ANNOTATION = "org.opencontainers.image.enc.keys.jwe"
MAX_WRAPPED_VALUES = 64

#: The OCI layer media types ocicrypt encrypts (each gains `+encrypted`).
LAYER_MEDIA_TYPES = frozenset({
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
})


def is_encrypted(desc: dict[str, Any]) -> bool:
    """True when the descriptor's media type says ocicrypt encrypted it."""
    media_type = desc.get("mediaType")
    return isinstance(media_type, str) and media_type.endswith(ENCRYPTED_SUFFIX)


def annotations_of(desc: dict[str, Any]) -> dict[str, str]:
    annotations = desc.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()):
        raise MalformedRequestError("layer descriptor: `annotations` is not a map of strings")
    return annotations


def wrapped_values(desc: dict[str, Any], annotation: str) -> list[str]:
    """The comma-separated values of one key annotation (empty when absent)."""
    value = annotations_of(desc).get(annotation, "")
    values = [part for part in value.split(",") if part]
    if len(values) > MAX_WRAPPED_VALUES:
        raise MalformedRequestError(f"layer annotation {annotation}: more than {MAX_WRAPPED_VALUES} values")
    return values


def public_options_of(desc: dict[str, Any]) -> PublicLayerOptions:
    """The public options (HMAC) an encrypted layer descriptor carries in its pubopts annotation."""
    value = annotations_of(desc).get(PUBOPTS_ANNOTATION)
    if not value:
        raise MalformedRequestError(f"encrypted layer {str(desc.get('digest'))[:80]}: no {PUBOPTS_ANNOTATION} annotation")
    return PublicLayerOptions.from_annotation(value)


def encrypted_descriptor(desc: dict[str, Any], digest: str, size: int, annotations: dict[str, str]) -> dict[str, Any]:
    """The descriptor of the encrypted blob: `+encrypted` media type, the ciphertext's digest and size, `annotations` added."""
    media_type = desc.get("mediaType")
    if media_type not in LAYER_MEDIA_TYPES:
        raise MalformedRequestError(f"layer media type {media_type!r} cannot be encrypted (OCI tar layers only)")
    return {**desc, "mediaType": f"{media_type}{ENCRYPTED_SUFFIX}", "digest": digest, "size": size,
            "annotations": {**annotations_of(desc), **annotations}}


def decrypted_descriptor(desc: dict[str, Any], digest: str, size: int) -> dict[str, Any]:
    """The descriptor of the decrypted blob: suffix removed, the plaintext's digest and size, no enc annotations."""
    if not is_encrypted(desc):
        raise MalformedRequestError("layer descriptor: not an encrypted layer")
    result = {**desc, "mediaType": str(desc["mediaType"]).removesuffix(ENCRYPTED_SUFFIX), "digest": digest, "size": size}
    kept = {k: v for k, v in annotations_of(desc).items() if not k.startswith(ANNOTATION_PREFIX)}
    if kept:
        result["annotations"] = kept
    else:
        result.pop("annotations", None)
    return result
