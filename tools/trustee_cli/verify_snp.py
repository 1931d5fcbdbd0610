"""`trustee verify --tee snp`: one SEV-SNP report, offline, every step explained.

`--evidence` is upstream's wire JSON (`{"attestation_report": {...},
"cert_chain": [...]}`) or a raw 1184-byte report. `--collateral` adds
certificates and CRLs: one PEM/DER file (a VCEK/VLEK, an ASK/ASVK/ARK bundle
or a CRL), a directory holding such files (`*.der`, `*.pem`, `*.cer`,
`*.crt`, `*.crl`), or an offline store in AMD KDS layout (`vcek/v1/...`,
see `attestation_service.snp_vcek`). The ARKs are always the pinned ones
shipped with the verifier; report data and init data are compared
padded/truncated to 64 and 32 bytes.
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

from attestation_service.core.verifiers.snp import (
    SnpVerificationInput,
    VcekKey,
    evaluate_snp_report,
    load_certificates,
    parse_evidence,
    parse_report,
)
from attestation_service.core.verifiers.snp.certs import load_crl
from attestation_service.snp_vcek import OfflineVcekStore
from cryptography import x509

from trustee_cli.verify import Outcome
from trustee_common.errors import ConfigError, EvidenceError

COLLATERAL_SUFFIXES = (".der", ".pem", ".cer", ".crt", ".crl")


def _read(path: Path, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {flag} {path}: {exc.strerror or exc}") from None


def _certificates_or_crl(data: bytes, name: str) -> tuple[list[x509.Certificate], list[bytes]]:
    try:
        return load_certificates(data, name), []
    except EvidenceError:
        pass
    try:
        load_crl(data)
    except EvidenceError:
        raise ConfigError(f"--collateral {name}: neither a certificate nor a CRL (PEM or DER)") from None
    return [], [data]


def load_collateral(path: str | None, report: bytes) -> tuple[list[x509.Certificate], list[bytes]]:
    """Certificates and CRLs from `--collateral` (file, directory, or KDS-layout store)."""
    if path is None:
        return [], []
    root = Path(path)
    if root.is_file():
        return _certificates_or_crl(_read(root, "--collateral"), str(root))
    if not root.is_dir():
        raise ConfigError(f"--collateral {path}: no such file or directory")
    certs: list[x509.Certificate] = []
    crls: list[bytes] = []
    for file in sorted(root.iterdir()):
        if file.is_file() and file.suffix.lower() in COLLATERAL_SUFFIXES:
            found, crl = _certificates_or_crl(_read(file, "--collateral"), str(file))
            certs += found
            crls += crl
    if (root / "vcek").is_dir() or (root / "vlek").is_dir():
        store = OfflineVcekStore(root)
        crls += store.crls()
        try:
            key = VcekKey.of(parse_report(report))
        except EvidenceError:
            return certs, crls  # the verification reports the parse failure with its step
        stored = store.lookup(key)
        if stored is not None:
            certs += _certificates_or_crl(stored, "stored VCEK")[0]
    return certs, crls


def verify_snp(args: argparse.Namespace, now: datetime.datetime) -> Outcome:
    raw = _read(Path(args.evidence), "--evidence")
    certs: list[x509.Certificate] = []
    crls: list[bytes] = []
    if raw.lstrip()[:1] == b"{":
        try:
            evidence = json.loads(raw)
        except ValueError:
            raise ConfigError(f"--evidence {args.evidence}: starts like JSON but is not JSON") from None
        parsed = parse_evidence(evidence)
        report, certs, crls = parsed.report, list(parsed.certificates), list(parsed.crls)
    else:
        report = raw
    extra_certs, extra_crls = load_collateral(args.collateral, report)
    request = SnpVerificationInput(
        report=report, now=now, certificates=(*certs, *extra_certs), crls=(*crls, *extra_crls),
        report_data=args.report_data, init_data_hash=args.init_data_hash,
    )
    result = evaluate_snp_report(request)
    return Outcome([s.to_json() for s in result.steps], result.claims, None if result.error is None else result.error.detail)
