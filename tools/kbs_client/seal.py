"""`kbs-client config seal-secret`: build and sign a sealed secret for the CDH's `UnsealSecret`.

Nothing is sent anywhere: the operator stores what the secret refers to
in the KBS separately (`config set-resource`). `vault` names a KBS
resource; `envelope` encrypts the file's bytes under a fresh data key and
wraps that key with the operator's local copy of the KEK (`--kek-file`,
32 raw bytes), which must also be in the KBS at `--key-id`, as upstream's
`coco_keyprovider` takes its KEK from a local key file. The format is in
`guest.cdh.sealed`.
"""

from __future__ import annotations

from dataclasses import dataclass

from guest.cdh import sealed
from guest.resource_uri import ResourceUri
from trustee_common.errors import MalformedRequestError


@dataclass(frozen=True)
class SealRequest:
    kind: str
    signing_key_pem: bytes
    signing_kid: str
    resource_uri: str | None = None
    key_id: str | None = None
    kek: bytes | None = None
    plaintext: bytes | None = None


def check_uri(uri: str, flag: str) -> str:
    try:
        ResourceUri.parse(uri)
    except MalformedRequestError as exc:
        raise MalformedRequestError(f"{flag}: {exc.detail}") from None
    return uri


def seal(request: SealRequest) -> str:
    """The `sealed.` string for `request`."""
    key = sealed.load_signing_key(request.signing_key_pem, "--signing-key")
    if request.kind == "vault":
        assert request.resource_uri is not None
        content: sealed.Secret = sealed.VaultSecret(check_uri(request.resource_uri, "--resource-uri"))
    else:
        assert request.key_id is not None and request.kek is not None and request.plaintext is not None
        content = sealed.seal_envelope(request.plaintext, check_uri(request.key_id, "--key-id"), request.kek)
    secret = sealed.sign(content.payload(), key, request.signing_kid)
    if len(secret) > sealed.MAX_SEALED_BYTES:
        raise MalformedRequestError(f"the sealed secret would be {len(secret)} bytes, over the CDH's limit of "
                                    f"{sealed.MAX_SEALED_BYTES}: store the value as a KBS resource and seal a vault secret")
    return secret
