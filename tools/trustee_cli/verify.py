"""`trustee verify`: check one piece of evidence offline and explain every step.

```
trustee verify --tee tdx|tpm|az-snp-vtpm|az-tdx-vtpm --evidence FILE [--collateral FILE|DIR] [--at RFC3339]
               [--report-data HEX] [--init-data-hash HEX] [--accept-expired-collateral]
               [--trusted-ak FILE]... [--ak-ca FILE]... [--json]
```

`tpm`, `az-snp-vtpm`, `az-tdx-vtpm` take their wire JSON. Report data is
compared padded/truncated to the TEE's size (tdx 64, tpm 32, Azure vTPM
nonce exactly).

`--evidence` is the wire JSON (`{"quote": b64, "cc_eventlog": b64|null}`) or
a raw quote. Without `--collateral` only the quote's own signatures, the QE
binding and the PCK chain are checked and the collateral steps are listed as
skipped. Exit codes: 0 verified, 1 rejected (reason on stderr), 2 usage
error. New TEEs plug into `VERIFIERS` (tee name -> function).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attestation_service.collateral import load_collateral
from attestation_service.core.verifiers.tdx import (
    TdxVerificationInput,
    evaluate_tdx_quote,
    parse_evidence,
    parse_quote,
    replay_event_log,
)
from attestation_service.core.verifiers.tdx.collateral import TdxCollateral
from attestation_service.core.verifiers.tdx.verifier import collateral_key

from trustee_common.errors import ConfigError, EvidenceError, TrusteeError


@dataclass
class Outcome:
    """A TEE-independent verification result: steps as dicts (`step`, `name`, `outcome`, `detail`)."""

    steps: list[dict[str, Any]] = field(default_factory=list)
    claims: dict[str, Any] | None = None
    error: str | None = None


#: Where `trustee verify` takes the TPM AK anchors from (named when the AK is not trusted).
TPM_ANCHOR_FLAGS = "give the AK with --trusted-ak FILE or its EK/AK CA with --ak-ca FILE"

VerifyFunction = Callable[[argparse.Namespace, datetime.datetime], Outcome]


def _read(path: str, flag: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {flag} {path}: {exc.strerror or exc}") from None


def _tdx_collateral(path: str | None, quote: bytes) -> TdxCollateral | None:
    if path is None:
        return None
    bundles = load_collateral(Path(path))
    if Path(path).is_file():
        return next(iter(bundles.values()))
    try:
        key = collateral_key(parse_quote(quote))
    except EvidenceError:
        return None  # the verification reports the parse failure with its step
    return bundles.get(key)


def verify_tdx(args: argparse.Namespace, now: datetime.datetime) -> Outcome:
    raw = _read(args.evidence, "--evidence")
    event_log = None
    if raw.lstrip()[:1] == b"{":
        try:
            evidence = json.loads(raw)
        except ValueError:
            raise ConfigError(f"--evidence {args.evidence}: starts like JSON but is not JSON") from None
        quote, event_log = parse_evidence(evidence)
    else:
        quote = raw
    collateral = _tdx_collateral(args.collateral, quote)
    request = TdxVerificationInput(
        quote=quote, now=now, collateral=collateral, report_data=args.report_data, init_data_hash=args.init_data_hash,
        event_log=event_log, accept_expired_collateral=args.accept_expired_collateral,
        require_collateral=args.collateral is not None,
    )
    report = evaluate_tdx_quote(request, event_log_replayer=replay_event_log)
    return Outcome([s.to_json() for s in report.steps], report.claims, None if report.error is None else report.error.detail)


def _evidence_json(args: argparse.Namespace) -> object:
    raw = _read(args.evidence, "--evidence")
    try:
        return json.loads(raw)
    except ValueError:
        raise ConfigError(f"--evidence {args.evidence}: is not JSON") from None


def _tee_pubkey(args: argparse.Namespace) -> object:
    """`--tee-pubkey`: the request's TEE key as a JWK (JSON file); None when not given."""
    if args.tee_pubkey is None:
        return None
    try:
        value = json.loads(_read(args.tee_pubkey, "--tee-pubkey"))
    except ValueError:
        raise ConfigError(f"--tee-pubkey {args.tee_pubkey}: is not JSON") from None
    if not isinstance(value, dict):
        raise ConfigError(f"--tee-pubkey {args.tee_pubkey}: is not a JWK object")
    return value


def verify_tpm(args: argparse.Namespace, now: datetime.datetime) -> Outcome:
    """`tpm`: upstream's evidence JSON; the AK must be a `--trusted-ak` or reach an `--ak-ca`, else step 2 fails."""
    from attestation_service.config import TpmSettings
    from attestation_service.core.verifiers.tpm import AkTrust, evaluate_tpm_quote, parse_evidence, replay_tpm_event_log
    from attestation_service.tpm_config import build_tpm_verifier

    evidence = parse_evidence(_evidence_json(args))
    settings = TpmSettings(tuple(Path(p) for p in args.trusted_ak or ()), tuple(Path(p) for p in args.ak_ca or ()))
    configured = build_tpm_verifier(settings).trust
    trust = AkTrust(configured.trusted_aks, configured.ca_certs, rvps=False, config_hint=TPM_ANCHOR_FLAGS)
    report = evaluate_tpm_quote(
        evidence, now=now, report_data=args.report_data, init_data_hash=args.init_data_hash,
        trust=trust, replayer=replay_tpm_event_log, tee_pubkey=_tee_pubkey(args),
    )
    return Outcome([s.to_json() for s in report.steps], report.claims, None if report.error is None else report.error.detail)


def verify_az_snp_vtpm(args: argparse.Namespace, now: datetime.datetime) -> Outcome:
    """`az-snp-vtpm`: HCL report + SNP report (VCEK from the evidence, pinned AMD chains) + vTPM quote."""
    from attestation_service.core.verifiers.azure import evaluate_az_snp_vtpm, parse_azure_evidence

    evidence = parse_azure_evidence(_evidence_json(args), "az-snp-vtpm")
    report = evaluate_az_snp_vtpm(evidence, now=now, report_data=args.report_data, init_data_hash=args.init_data_hash)
    return Outcome([s.to_json() for s in report.steps], report.claims, None if report.error is None else report.error.detail)


def verify_az_tdx_vtpm(args: argparse.Namespace, now: datetime.datetime) -> Outcome:
    """`az-tdx-vtpm`: HCL report + TD quote (DCAP with `--collateral`, else signatures only) + vTPM quote."""
    from attestation_service.core.verifiers.azure import evaluate_az_tdx_vtpm, parse_azure_evidence

    evidence = parse_azure_evidence(_evidence_json(args), "az-tdx-vtpm")
    collateral = _tdx_collateral(args.collateral, evidence.platform)
    report = evaluate_az_tdx_vtpm(
        evidence, now=now, report_data=args.report_data, init_data_hash=args.init_data_hash, collateral=collateral
    )
    return Outcome([s.to_json() for s in report.steps], report.claims, None if report.error is None else report.error.detail)


def verify_snp(args: argparse.Namespace, now: datetime.datetime) -> Outcome:
    """`snp`: wire JSON or a raw 1184-byte report; `--collateral` file, directory or KDS-layout store (trustee_cli.verify_snp)."""
    from trustee_cli.verify_snp import verify_snp as run

    return run(args, now)


VERIFIERS: dict[str, VerifyFunction] = {
    "snp": verify_snp,
    "tdx": verify_tdx, "tpm": verify_tpm, "az-snp-vtpm": verify_az_snp_vtpm, "az-tdx-vtpm": verify_az_tdx_vtpm,
}


def rfc3339(text: str) -> datetime.datetime:
    try:
        value = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an RFC 3339 date-time") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone (add Z or +00:00)")
    return value.astimezone(datetime.UTC)


def hex_bytes(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not hex") from None


def add_verify_parser(commands: Any) -> None:
    verify = commands.add_parser("verify", help="verify evidence offline and print every step")
    verify.add_argument("--tee", required=True, choices=sorted(VERIFIERS), help="TEE type of the evidence")
    verify.add_argument("--evidence", required=True, help="evidence file: wire JSON or a raw quote")
    verify.add_argument("--collateral", help="collateral: one QuoteCollateralV3 JSON file or a directory of them")
    verify.add_argument("--at", type=rfc3339, help="verification time (RFC 3339; default now)")
    verify.add_argument("--report-data", type=hex_bytes,
                        help="expected report data (hex; tdx: padded/truncated to 64 bytes, tpm: to 32, az-*: exact vTPM nonce)")
    verify.add_argument("--init-data-hash", type=hex_bytes,
                        help="expected init-data digest (hex; tdx: padded/truncated to 48 bytes; tpm/az-*: PCR 8 check)")
    verify.add_argument("--accept-expired-collateral", action="store_true",
                        help="report expired collateral (collateral_expiration_status 1) instead of rejecting")
    verify.add_argument("--trusted-ak", action="append", metavar="FILE",
                        help="tpm: a trusted AK (PEM/DER public key or certificate); repeatable")
    verify.add_argument("--ak-ca", action="append", metavar="FILE",
                        help="tpm: an AK/EK CA certificate file an evidence ak_cert_chain may reach; repeatable")
    verify.add_argument("--tee-pubkey", metavar="FILE",
                        help="tpm: the request's tee-pubkey JWK (JSON file), to check tee_pubkey_certify (docs/tpm-bound-keys.md)")
    verify.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    verify.set_defaults(handler=cmd_verify)


def cmd_verify(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    now = args.at if args.at is not None else datetime.datetime.now(datetime.UTC)
    try:
        outcome = VERIFIERS[args.tee](args, now)
    except EvidenceError as exc:
        outcome = Outcome(error=exc.detail)
    except TrusteeError as exc:
        if isinstance(exc, ConfigError):
            raise
        outcome = Outcome(error=exc.detail)
    verdict = "verified" if outcome.error is None else "rejected"
    if args.json:
        print(json.dumps({"tee": args.tee, "at": now.isoformat().replace("+00:00", "Z"), "verdict": verdict,
                          "steps": outcome.steps, "claims": outcome.claims, "error": outcome.error}, indent=2))
    else:
        _print_text(args.tee, now, outcome, verdict)
    if outcome.error is not None:
        print(f"FAIL: {outcome.error}", file=sys.stderr)
        return 1
    skipped = any(step["outcome"] == "skipped" and step["step"] == 3 for step in outcome.steps)
    print("OK: verified" + (" (signatures only: no collateral, collateral steps skipped)" if skipped else ""), file=sys.stderr)
    return 0


def _print_text(tee: str, now: datetime.datetime, outcome: Outcome, verdict: str) -> None:
    print(f"{tee} evidence at {now.isoformat().replace('+00:00', 'Z')}")
    for step in outcome.steps:
        print(f"  step {step['step']:>2} {step['name']:<26} {step['outcome'].upper():<7} {step['detail']}")
    if outcome.claims is not None:
        print("claims:")
        print(json.dumps(outcome.claims, indent=2, sort_keys=True))
    suffix = "" if outcome.claims is None or "tcb_status" not in outcome.claims else f" (tcb_status {outcome.claims['tcb_status']})"
    print(f"verdict: {verdict.upper()}{suffix}" + ("" if outcome.error is None else f": {outcome.error}"))
