"""ocicrypt, the OCI image layer encryption of containers/ocicrypt, as pure functions over bytes and file objects.

What each module does:

- `options`: the private options (layer key, nonce, plaintext digest; the
  "PLBCO") and the public options (HMAC), as ocicrypt's JSON;
- `layer`: `encrypt_layer` / `decrypt_layer`, streaming
  AES_256_CTR_HMAC_SHA256 (byte-compatible with skopeo);
- `packet`: the attestation-agent AnnotationPacket, wrapping the private
  options under a KBS-held key-encryption key (`wrap_private_options`,
  `unwrap_private_options`);
- `recipients`: JWE key wrapping for public-key recipients (skopeo `jwe:`);
- `keyprovider`: the UnWrapKey request and response of the ocicrypt
  key-provider protocol that the CDH serves;
- `descriptor`: encrypted media types and layer annotations.

Nothing here fetches a key, opens a file or talks to a network.
"""

from trustee_common.ocicrypt.descriptor import (
    JWE_ANNOTATION,
    PROVIDER_ANNOTATION,
    PUBOPTS_ANNOTATION,
    decrypted_descriptor,
    encrypted_descriptor,
    is_encrypted,
    public_options_of,
    wrapped_values,
)
from trustee_common.ocicrypt.keyprovider import parse_unwrap_request, parse_unwrap_response, unwrap_request, unwrap_response
from trustee_common.ocicrypt.layer import decrypt_layer, encrypt_layer
from trustee_common.ocicrypt.options import PrivateLayerOptions, PublicLayerOptions
from trustee_common.ocicrypt.packet import AnnotationPacket, check_unwrappable, unwrap_private_options, wrap_private_options
from trustee_common.ocicrypt.recipients import unwrap_with_private_keys, wrap_for_recipients

__all__ = [
    "JWE_ANNOTATION", "PROVIDER_ANNOTATION", "PUBOPTS_ANNOTATION", "AnnotationPacket", "PrivateLayerOptions", "PublicLayerOptions",
    "check_unwrappable", "decrypt_layer", "decrypted_descriptor", "encrypt_layer", "encrypted_descriptor", "is_encrypted",
    "parse_unwrap_request", "parse_unwrap_response", "public_options_of", "unwrap_private_options", "unwrap_request", "unwrap_response",
    "unwrap_with_private_keys", "wrap_for_recipients", "wrap_private_options", "wrapped_values",
]
