"""TPM 2.0 wire structures (big-endian): TPMS_ATTEST (quote, certify), TPMT_SIGNATURE, TPMT_PUBLIC (RSA).

Layouts: evidence.md 4.1-4.2; TPMS_CERTIFY_INFO (name, qualifiedName) and
TPMT_PUBLIC from TPM 2.0 Part 2 (docs/tpm-bound-keys.md).

Pure and total: any byte string either parses or raises `TpmParseError`
naming the field and its offset; no `IndexError`/`struct.error` escapes.
Values are not judged here (magic, type and algorithms are checked by the
verifier); only what the layout itself needs is enforced.
"""

from __future__ import annotations

from dataclasses import dataclass

from trustee_common.errors import EvidenceError

TPM_GENERATED_VALUE = 0xFF544347
TPM_ST_ATTEST_QUOTE = 0x8018
TPM_ST_ATTEST_CERTIFY = 0x8017
ALG_RSA, ALG_NULL, ALG_RSAES, ALG_OAEP = 0x0001, 0x0010, 0x0015, 0x0017
#: TPMA_OBJECT bits.
ATTR_FIXED_TPM, ATTR_FIXED_PARENT, ATTR_SENSITIVE_DATA_ORIGIN = 0x2, 0x10, 0x20
ATTR_RESTRICTED, ATTR_DECRYPT, ATTR_SIGN = 0x10000, 0x20000, 0x40000
ALG_RSASSA, ALG_RSAPSS, ALG_ECDSA = 0x0014, 0x0016, 0x0018
ALG_SHA1, ALG_SHA256, ALG_SHA384, ALG_SHA512 = 0x0004, 0x000B, 0x000C, 0x000D
#: TPM hash algorithm id -> (hashlib name, digest size).
HASHES = {ALG_SHA1: ("sha1", 20), ALG_SHA256: ("sha256", 32), ALG_SHA384: ("sha384", 48), ALG_SHA512: ("sha512", 64)}
SIGNATURE_SCHEMES = {ALG_RSASSA: "RSASSA", ALG_RSAPSS: "RSAPSS", ALG_ECDSA: "ECDSA"}
#: Largest TPMS_ATTEST / TPMT_SIGNATURE accepted (real ones are 100-600 bytes).
MAX_STRUCTURE_SIZE = 4096
#: Most PCR banks in one selection.
MAX_BANKS = 8


class TpmParseError(EvidenceError):
    """Bytes that are not a well-formed TPMS_ATTEST or TPMT_SIGNATURE."""


class _Reader:
    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.offset = 0
        self.what = what

    def take(self, size: int, field: str) -> bytes:
        if self.offset + size > len(self.data):
            left = len(self.data) - self.offset
            raise TpmParseError(f"{self.what} {field}: needs {size} bytes at offset {self.offset}, only {left} available")
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def uint(self, size: int, field: str) -> int:
        return int.from_bytes(self.take(size, field), "big")

    def sized(self, field: str) -> bytes:
        return self.take(self.uint(2, field + " size"), field)

    def finish(self) -> None:
        if self.offset != len(self.data):
            raise TpmParseError(f"{self.what}: {len(self.data) - self.offset} trailing bytes at offset {self.offset}")


@dataclass(frozen=True, slots=True)
class PcrSelection:
    hash_alg: int
    #: Selected PCR indices, ascending.
    pcrs: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class TpmsAttest:
    magic: int
    type: int
    qualified_signer: bytes
    extra_data: bytes
    clock: int
    reset_count: int
    restart_count: int
    safe: bool
    firmware_version: int
    selections: tuple[PcrSelection, ...]
    pcr_digest: bytes
    raw: bytes


@dataclass(frozen=True, slots=True)
class TpmtSignature:
    sig_alg: int
    hash_alg: int
    #: RSA signature bytes, or (for ECDSA) r then s as given.
    signature: bytes = b""
    r: bytes = b""
    s: bytes = b""

    @property
    def scheme(self) -> str:
        return SIGNATURE_SCHEMES.get(self.sig_alg, f"{self.sig_alg:#06x}")


def _check_size(data: bytes, what: str) -> None:
    if len(data) > MAX_STRUCTURE_SIZE:
        raise TpmParseError(f"{what}: {len(data)} bytes is more than the {MAX_STRUCTURE_SIZE} allowed")


def _header(data: bytes, expected: int, name: str) -> tuple[_Reader, tuple[int, int, bytes, bytes, int, int, int, bool, int]]:
    """The TPMS_ATTEST fields before `attested`, the type being `expected`."""
    _check_size(data, "TPMS_ATTEST")
    r = _Reader(bytes(data), "TPMS_ATTEST")
    magic, kind = r.uint(4, "magic"), r.uint(2, "type")
    if kind != expected:
        raise TpmParseError(f"TPMS_ATTEST type: {kind:#06x} at offset 4 is not {name} ({expected:#06x})")
    signer, extra = r.sized("qualifiedSigner"), r.sized("extraData")
    clock, reset, restart, safe = r.uint(8, "clock"), r.uint(4, "resetCount"), r.uint(4, "restartCount"), r.uint(1, "safe")
    firmware = r.uint(8, "firmwareVersion")
    return r, (magic, kind, signer, extra, clock, reset, restart, bool(safe), firmware)


def parse_attest(data: bytes) -> TpmsAttest:
    """Parse a TPMS_ATTEST of type ATTEST_QUOTE layout (the type itself is checked by the verifier)."""
    r, head = _header(data, TPM_ST_ATTEST_QUOTE, "TPM_ST_ATTEST_QUOTE")
    at = r.offset
    count = r.uint(4, "pcrSelect count")
    if count > MAX_BANKS:
        raise TpmParseError(f"TPMS_ATTEST pcrSelect count: {count} at offset {at} is more than {MAX_BANKS}")
    selections = []
    for _ in range(count):
        alg, size = r.uint(2, "pcrSelect hashAlg"), r.uint(1, "pcrSelect sizeofSelect")
        bitmap = r.take(size, "pcrSelect bitmap")
        pcrs = tuple(i for i in range(size * 8) if bitmap[i // 8] >> (i % 8) & 1)
        selections.append(PcrSelection(alg, pcrs))
    digest = r.sized("pcrDigest")
    r.finish()
    return TpmsAttest(*head, tuple(selections), digest, bytes(data))


@dataclass(frozen=True, slots=True)
class TpmsCertify:
    """A TPMS_ATTEST of type ATTEST_CERTIFY (TPM2_Certify)."""

    magic: int
    extra_data: bytes
    #: The certified object's Name (nameAlg u16 || digest) and qualified name.
    name: bytes
    qualified_name: bytes
    raw: bytes


def parse_certify(data: bytes) -> TpmsCertify:
    """Parse a TPMS_ATTEST of type TPM_ST_ATTEST_CERTIFY."""
    r, head = _header(data, TPM_ST_ATTEST_CERTIFY, "TPM_ST_ATTEST_CERTIFY")
    name, qualified = r.sized("certify name"), r.sized("certify qualifiedName")
    r.finish()
    return TpmsCertify(head[0], head[3], name, qualified, bytes(data))


@dataclass(frozen=True, slots=True)
class TpmtPublicRsa:
    """The fields of an RSA TPMT_PUBLIC a key check needs."""

    name_alg: int
    attributes: int
    symmetric: int
    scheme: int
    key_bits: int
    #: The public exponent (0 in the structure means 65537).
    exponent: int
    modulus: bytes
    raw: bytes


def parse_tpmt_public_rsa(data: bytes) -> TpmtPublicRsa:
    """Parse a TPMT_PUBLIC of type TPM_ALG_RSA (TPMS_RSA_PARMS, TPM2B_PUBLIC_KEY_RSA unique)."""
    _check_size(data, "TPMT_PUBLIC")
    r = _Reader(bytes(data), "TPMT_PUBLIC")
    kind = r.uint(2, "type")
    if kind != ALG_RSA:
        raise TpmParseError(f"TPMT_PUBLIC type: {kind:#06x} is not TPM_ALG_RSA (0x0001)")
    name_alg, attributes = r.uint(2, "nameAlg"), r.uint(4, "objectAttributes")
    r.sized("authPolicy")
    symmetric = r.uint(2, "symmetric algorithm")
    if symmetric != ALG_NULL:
        r.take(4, "symmetric keyBits/mode")
    scheme = r.uint(2, "scheme")
    if scheme not in (ALG_NULL, ALG_RSAES):
        r.take(2, "scheme hashAlg")
    key_bits, exponent = r.uint(2, "keyBits"), r.uint(4, "exponent")
    modulus = r.sized("unique (modulus)")
    r.finish()
    return TpmtPublicRsa(name_alg, attributes, symmetric, scheme, key_bits, exponent or 65537, modulus, bytes(data))


def parse_signature(data: bytes) -> TpmtSignature:
    """Parse a TPMT_SIGNATURE of scheme RSASSA, RSAPSS or ECDSA."""
    _check_size(data, "TPMT_SIGNATURE")
    r = _Reader(bytes(data), "TPMT_SIGNATURE")
    alg = r.uint(2, "sigAlg")
    if alg not in SIGNATURE_SCHEMES:
        raise TpmParseError(f"TPMT_SIGNATURE sigAlg: {alg:#06x} is not RSASSA, RSAPSS or ECDSA")
    hash_alg = r.uint(2, "hashAlg")
    if alg == ALG_ECDSA:
        sig = TpmtSignature(alg, hash_alg, r=r.sized("signatureR"), s=r.sized("signatureS"))
    else:
        sig = TpmtSignature(alg, hash_alg, signature=r.sized("sig"))
    r.finish()
    return sig
