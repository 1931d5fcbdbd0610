"""`trustee snp-measure`: the expected SEV-SNP launch measurement, optionally registered in the RVPS in one step.

```
trustee snp-measure --ovmf OVMF.fd --vcpus N
                    (--vcpu-type EPYC-Milan | --vcpu-sig 0xA00F11 | --vcpu-family F --vcpu-model M --vcpu-stepping S)
                    [--kernel K [--initrd I] [--append CMDLINE]] [--guest-features 0x1] [--vmm-type QEMU|ec2|gce]
                    [--snp-ovmf-hash HEX] [--register-rvps HOST:PORT [--name snp_launch_measurement] [--replace]
                    [--rvps-ca PEM] [--rvps-cert PEM --rvps-key PEM]] [--json]
```

The digest is computed by the `sev-snp-measure` package (virtee, evidence.md
3.6) exactly as its own CLI does for `--mode snp`. With `--register-rvps` the
hex digest is added to the reference value `snp_launch_measurement` (the
name the default policy reads: `input.snp.measurement in
query_reference_value("snp_launch_measurement")`) of the RVPS at that gRPC
address (an RVPS, or an AS serving the RVPS API): existing measurements are
kept unless `--replace`. `--register-rvps https://HOST:PORT` uses TLS
(`--rvps-ca`; `--rvps-cert`/`--rvps-key` for a mutual-TLS RVPS or AS, which
is needed for writes on a non-loopback one, docs/grpc-tls.md). Prints the hex digest (or JSON with `--json`).
Exit 0 done, 1 failure, 2 usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from rvps.client import RemoteReferenceValueProvider
from trustee_common.b64 import std_encode
from trustee_common.errors import ConfigError, TrusteeError
from trustee_common.tls_config import ClientTls

DEFAULT_NAME = "snp_launch_measurement"


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def add_snp_measure_parser(commands: Any) -> None:
    measure = commands.add_parser("snp-measure", help="compute the SNP launch measurement (sev-snp-measure) and register it in the RVPS")
    measure.add_argument("--ovmf", required=True, help="OVMF firmware image with SEV metadata")
    measure.add_argument("--vcpus", type=int, required=True, help="number of guest vCPUs")
    measure.add_argument("--vcpu-type", help="QEMU CPU model (e.g. EPYC-Milan, EPYC-Genoa)")
    measure.add_argument("--vcpu-sig", type=_int, help="guest vCPU signature (CPUID 1 EAX)")
    measure.add_argument("--vcpu-family", type=int, help="guest vCPU family (with --vcpu-model and --vcpu-stepping)")
    measure.add_argument("--vcpu-model", type=int, help="guest vCPU model")
    measure.add_argument("--vcpu-stepping", type=int, help="guest vCPU stepping")
    measure.add_argument("--vmm-type", default="QEMU", choices=["QEMU", "ec2", "gce"], help="VMM (default QEMU)")
    measure.add_argument("--kernel", help="kernel measured by OVMF (direct boot)")
    measure.add_argument("--initrd", help="initrd (needs --kernel)")
    measure.add_argument("--append", help="kernel command line (needs --kernel)")
    measure.add_argument("--guest-features", type=_int, default=0x1, help="SEV_FEATURES of the guest (default 0x1)")
    measure.add_argument("--snp-ovmf-hash", help="precalculated OVMF hash (hex)")
    measure.add_argument("--register-rvps", metavar="HOST:PORT", help="add the digest to the reference value in this RVPS (gRPC)")
    measure.add_argument("--name", default=DEFAULT_NAME, help=f"reference value name (default {DEFAULT_NAME})")
    measure.add_argument("--replace", action="store_true", help="replace the registered measurements instead of adding to them")
    measure.add_argument("--rvps-ca", help="https:// --register-rvps: PEM CA of the RVPS's TLS certificate (default: system roots)")
    measure.add_argument("--rvps-cert", help="https:// --register-rvps: PEM client certificate for mutual TLS (with --rvps-key)")
    measure.add_argument("--rvps-key", help="PEM private key of --rvps-cert")
    measure.add_argument("--json", action="store_true", help="print one JSON object")
    measure.set_defaults(handler=cmd_snp_measure)


def _vcpu_sig(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from sevsnpmeasure import vcpu_types

    if args.vcpu_sig is not None:
        return int(args.vcpu_sig)
    if None not in (args.vcpu_family, args.vcpu_model, args.vcpu_stepping):
        return int(vcpu_types.cpu_sig(args.vcpu_family, args.vcpu_model, args.vcpu_stepping))
    if args.vcpu_type is not None:
        if args.vcpu_type not in vcpu_types.CPU_SIGS:
            parser.error(f"--vcpu-type {args.vcpu_type!r} is not one of {', '.join(vcpu_types.CPU_SIGS)}")
        return int(vcpu_types.CPU_SIGS[args.vcpu_type])
    parser.error("one of --vcpu-type, --vcpu-sig or --vcpu-family/--vcpu-model/--vcpu-stepping is required")


def launch_digest(parser: argparse.ArgumentParser, args: argparse.Namespace) -> bytes:
    """The SNP launch digest (48 bytes) from sev-snp-measure, as its CLI computes it for `--mode snp`."""
    try:
        from sevsnpmeasure import guest
        from sevsnpmeasure.sev_mode import SevMode
        from sevsnpmeasure.vmm_types import VMMType
    except ModuleNotFoundError:
        raise ConfigError("the sev-snp-measure package is not installed (pip install sev-snp-measure)") from None
    if (args.initrd or args.append) and not args.kernel:
        parser.error("--initrd and --append need --kernel")
    for flag, path in (("--ovmf", args.ovmf), ("--kernel", args.kernel), ("--initrd", args.initrd)):
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"{flag} {path}: no such file")
    try:
        digest = guest.calc_launch_digest(
            SevMode.SEV_SNP, args.vcpus, _vcpu_sig(parser, args), args.ovmf, args.kernel, args.initrd, args.append,
            args.guest_features, args.snp_ovmf_hash or "", VMMType[args.vmm_type],
        )
    except (RuntimeError, ValueError, OSError) as exc:
        raise ConfigError(f"sev-snp-measure: {exc}") from None
    return bytes(digest)


def _rvps_tls(parser: argparse.ArgumentParser, args: argparse.Namespace) -> ClientTls | None:
    files = (args.rvps_ca, args.rvps_cert, args.rvps_key)
    if bool(args.rvps_cert) != bool(args.rvps_key):
        parser.error("--rvps-cert and --rvps-key go together")
    if not any(files):
        return None
    if args.register_rvps is None or not args.register_rvps.startswith("https://"):
        parser.error("--rvps-ca/--rvps-cert/--rvps-key need --register-rvps https://HOST:PORT")
    for flag, path in (("--rvps-ca", args.rvps_ca), ("--rvps-cert", args.rvps_cert), ("--rvps-key", args.rvps_key)):
        if path is not None and not Path(path).is_file():
            parser.error(f"{flag} {path}: no such file")
    return ClientTls(*(None if f is None else Path(f) for f in files))


async def register(address: str, name: str, measurement: str, *, replace: bool, tls: ClientTls | None = None) -> list[str]:
    """Add `measurement` to the list `name` in the RVPS (or set it alone with `replace`); returns the new list."""
    rvps = RemoteReferenceValueProvider(address, tls=tls, where="--register-rvps")
    try:
        values: list[str] = []
        current = None if replace else await rvps.query(name)
        if current is not None:
            existing = json.loads(current)
            values = [str(v) for v in existing] if isinstance(existing, list) else [str(existing)]
        if measurement not in values:
            values.append(measurement)
        payload = std_encode(json.dumps({name: values}).encode())
        await rvps.register(json.dumps({"version": "0.1.0", "type": "sample", "payload": payload}))
        return values
    finally:
        await rvps.close()


def cmd_snp_measure(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.vcpus < 1:
        parser.error("--vcpus must be at least 1")
    tls = _rvps_tls(parser, args)
    try:
        digest = launch_digest(parser, args).hex()
        registered = None
        if args.register_rvps is not None:
            registered = asyncio.run(register(args.register_rvps, args.name, digest, replace=args.replace, tls=tls))
    except TrusteeError as exc:
        print(f"FAIL: {exc.detail}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"measurement": digest, "reference_value": args.name if registered is not None else None,
                          "registered": registered}))
    else:
        print(digest)
    if registered is not None:
        print(f"OK: {args.name} in the RVPS at {args.register_rvps} now holds {len(registered)} measurement(s)", file=sys.stderr)
    return 0
