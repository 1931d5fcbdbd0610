"""`trustee initdata digest`: the value a host puts in a TEE's init-data field.

The host binds an init-data TOML (guest-components.md 7) to a guest by putting
its digest in a launch-time field the guest cannot change: TDX MRCONFIGID (48
bytes), SNP HOST_DATA (32 bytes), or, on vTPM platforms, PCR 8 after the guest's
attestation agent extends it with the digest. This module computes that value
with the very functions the checks use, never a second derivation:

* the digest: the AS's `parse_init_data_toml` (what the verifier recomputes
  from the TOML the guest sends), after the guest's `parse_init_data` accepted
  the file (what the AA requires at start-up); both must agree;
* TDX / SNP: the verifiers' own `regularize` with their `INIT_DATA_SIZE`
  (zero-pad or truncate), the value `check_binding` compares with the quote;
* tpm, az-snp-vtpm, az-tdx-vtpm: `expected_pcr8`, the value `check_init_data`
  compares with PCR 8 (a SHA-256 extend, so the digest must be sha256).

`--algorithm` other than the TOML's own `algorithm` gives the digest a guest
that sends the digest itself (AA `--initdata-digest`, KBS init-data format
`digest`) would bind; a guest that sends the TOML is checked with the TOML's
algorithm, so the command warns on stderr. The same module checks the init-data
`trustee guest --initdata-toml` starts the AA with (`guest_init_data`).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attestation_service.core.initdata import parse_init_data_toml
from attestation_service.core.verifiers.snp import verify as snp_verify
from attestation_service.core.verifiers.tdx import steps as tdx_steps
from attestation_service.core.verifiers.tpm.quote import expected_pcr8

from guest.attestation_agent.initdata import InitData, parse_init_data
from trustee_common.b64 import std_encode
from trustee_common.bounded import loads_toml
from trustee_common.canonical import HashAlgorithm
from trustee_common.errors import ConfigError, MalformedRequestError

#: The TEE names of kbs-types and the field each one binds the init-data digest to.
FIELDS = {
    "tdx": "MRCONFIGID",
    "snp": "HOST_DATA",
    "tpm": "PCR 8",
    "az-snp-vtpm": "PCR 8",
    "az-tdx-vtpm": "PCR 8",
}
ENCODINGS = ("hex", "base64")
#: Upper bound on an init-data file (kata's initdata device holds far less).
MAX_INIT_DATA_BYTES = 1 << 20
SHA256_SIZE = 32


@dataclass(frozen=True, slots=True)
class PlatformValue:
    tee: str
    field: str
    algorithm: HashAlgorithm
    digest: bytes
    value: bytes

    def encode(self, encoding: str) -> str:
        return self.value.hex() if encoding == "hex" else std_encode(self.value)


def read_init_data(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_INIT_DATA_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read init-data {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_INIT_DATA_BYTES:
        raise ConfigError(f"init-data {path} is larger than {MAX_INIT_DATA_BYTES} bytes")
    return raw


def checked_init_data(raw: bytes, where: str) -> InitData:
    """The init-data as the guest AA accepts it, whose digest the verifier recomputes identically."""
    guest = parse_init_data(raw, where)
    try:
        verifier = parse_init_data_toml(guest.toml)
    except MalformedRequestError as exc:
        raise ConfigError(f"{where}: the attestation service would refuse it: {exc.detail}") from None
    if verifier.digest != guest.digest:
        raise ConfigError(f"{where}: the guest and the attestation service compute different digests (is it UTF-8 with a BOM?)")
    return guest


def init_data_digest(raw: bytes, where: str, algorithm: HashAlgorithm | None = None) -> tuple[HashAlgorithm, bytes]:
    """(algorithm, digest): the TOML's own algorithm unless `algorithm` overrides it."""
    init_data = checked_init_data(raw, where)
    if algorithm is None or algorithm is init_data.algorithm:
        return init_data.algorithm, init_data.digest
    return algorithm, algorithm.digest(raw)


def platform_value(tee: str, algorithm: HashAlgorithm, digest: bytes) -> PlatformValue:
    if tee == "tdx":
        value = tdx_steps.regularize(digest, tdx_steps.INIT_DATA_SIZE)
    elif tee == "snp":
        value = snp_verify.regularize(digest, snp_verify.INIT_DATA_SIZE)
    elif tee in FIELDS:
        if len(digest) != SHA256_SIZE:
            raise ConfigError(f"{tee}: PCR 8 is extended in the SHA-256 bank, so the init-data algorithm must be sha256, "
                              f"not {algorithm.value}")
        value = expected_pcr8(digest)
    else:
        raise ConfigError(f"unknown TEE {tee!r} (one of {', '.join(FIELDS)})")
    return PlatformValue(tee, FIELDS[tee], algorithm, digest, value)


def compute(path: Path, tee: str, algorithm: HashAlgorithm | None = None) -> PlatformValue:
    chosen, digest = init_data_digest(read_init_data(path), f"init-data {path}", algorithm)
    return platform_value(tee, chosen, digest)


# --- trustee guest --initdata-toml ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GuestInitData:
    path: Path
    kbs_url: str | None
    kbs_cert_pem: str | None


def _kbs_table(init_data: InitData, where: str) -> dict[str, Any]:
    """`[token_configs.kbs]` of the init-data's `aa.toml`, or {} when it has none."""
    document = loads_toml(init_data.toml, "init-data", error=ConfigError)
    aa_toml = document.get("data", {}).get("aa.toml")
    if aa_toml is None:
        return {}
    try:
        aa = loads_toml(aa_toml, "aa.toml", error=ConfigError)
    except ConfigError as exc:
        raise ConfigError(f"{where}: [data] \"aa.toml\" is not TOML ({exc.detail})") from None
    kbs = aa.get("token_configs", {}).get("kbs", {}) if isinstance(aa.get("token_configs"), dict) else {}
    if not isinstance(kbs, dict) or not all(isinstance(kbs.get(k, ""), str) for k in ("url", "cert")):
        raise ConfigError(f"{where}: aa.toml [token_configs.kbs] url and cert must be strings")
    return kbs


def guest_init_data(path: Path, kbs_url: str | None, kbs_cert_pem: str | None) -> GuestInitData:
    """Check the init-data for `trustee guest`; its aa.toml KBS url/cert fill in or must equal the flags.

    The init-data is what the platform binds and the verifier sees, so a guest
    started against another KBS or certificate than it names is refused.
    """
    where = f"--initdata-toml {path}"
    kbs = _kbs_table(checked_init_data(read_init_data(path), where), where)
    bound_url = kbs.get("url", "").rstrip("/") or None
    bound_cert = kbs.get("cert") or None
    if kbs_url and bound_url and kbs_url.rstrip("/") != bound_url:
        raise ConfigError(f"{where}: its aa.toml names the KBS {bound_url}, not --kbs-url {kbs_url}")
    if kbs_cert_pem and bound_cert and kbs_cert_pem.strip() != bound_cert.strip():
        raise ConfigError(f"{where}: its aa.toml carries another KBS certificate than --kbs-cert")
    return GuestInitData(path.resolve(), kbs_url or bound_url, kbs_cert_pem or bound_cert)


# --- command line ---------------------------------------------------------------------------------------


def add_initdata_parser(commands: Any) -> None:
    initdata = commands.add_parser("initdata", help="init-data tools (the digest a host binds to a guest)")
    sub = initdata.add_subparsers(dest="initdata_command", required=True, metavar="COMMAND")
    digest = sub.add_parser(
        "digest", help="print the TEE's init-data field value for an init-data TOML, as the verifier checks it",
        description="Print the value to put in the platform's init-data field: TDX MRCONFIGID (48 bytes), SNP HOST_DATA "
                    "(32 bytes), or PCR 8 after the guest extends it (tpm, az-snp-vtpm, az-tdx-vtpm).")
    digest.add_argument("file", type=Path, metavar="FILE", help="the init-data TOML, exactly as the guest receives it")
    digest.add_argument("--tee", required=True, choices=tuple(FIELDS), help="the guest's TEE")
    digest.add_argument("--algorithm", choices=tuple(a.value for a in HashAlgorithm),
                        help="digest algorithm (default: the TOML's own `algorithm` key, as the guest and verifier use)")
    digest.add_argument("--encoding", choices=ENCODINGS, default="hex",
                        help="hex (default; as the claims show it) or base64 (as QEMU's mrconfigid/host-data and "
                             "libvirt's <mrConfigId> take it)")
    digest.set_defaults(handler=cmd_initdata_digest)


def cmd_initdata_digest(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    algorithm = None if args.algorithm is None else HashAlgorithm(args.algorithm)
    result = compute(args.file, args.tee, algorithm)
    if algorithm is not None:
        own = checked_init_data(read_init_data(args.file), f"init-data {args.file}").algorithm
        if own is not algorithm:
            print(f"warning: the TOML says algorithm = {own.value!r}: a guest that sends the TOML is checked with "
                  f"{own.value}, so this {algorithm.value} value only fits a guest that sends the digest itself",
                  file=sys.stderr)
    print(result.encode(args.encoding), flush=True)
    return 0
