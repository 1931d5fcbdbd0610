"""Per-evidence verification time of `tpm`, `az-snp-vtpm` and `az-tdx-vtpm`, beside the bare signature check.

    python -m bench.tpm_verify [--rounds N] [--corpus /work/shared/corpus]

For each corpus evidence it times, in the same run: the full pure
verification (parse, every step, claims) and the bare vTPM quote signature
check alone (one RSA verify over the TPMS_ATTEST bytes), and prints the
median and p95 of each in microseconds. No thresholds: this reports numbers.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attestation_service.core.verifiers.azure import evaluate_az_snp_vtpm, evaluate_az_tdx_vtpm, parse_azure_evidence
from attestation_service.core.verifiers.azure.hcl import parse_hcl_report
from attestation_service.core.verifiers.tpm import AkTrust, evaluate_tpm_quote, load_ak, parse_evidence, parse_signature, verify_signature
from attestation_service.core.verifiers.tpm.structures import ALG_RSASSA, ALG_SHA256, TpmtSignature

AZ_TIME = datetime.datetime(2025, 6, 1, tzinfo=datetime.UTC)


def timed(run: Callable[[], object], rounds: int) -> tuple[float, float]:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        samples.append((time.perf_counter() - start) * 1e6)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.95))]


def cases(corpus: Path) -> list[tuple[str, Callable[[], object], Callable[[], object]]]:
    tpm = json.loads((corpus / "tpm/trustee/evidence.json").read_text())
    parsed = parse_evidence(tpm)
    key, sig = load_ak(parsed.ak_der), parse_signature(parsed.signature)
    trust = AkTrust(registered_aks=frozenset({parsed.ak_der}))  # as registered in the RVPS (trusted_aks)
    out: list[tuple[str, Callable[[], object], Callable[[], object]]] = [(
        "tpm",
        lambda: evaluate_tpm_quote(parse_evidence(tpm), now=AZ_TIME, trust=trust).raise_for_failure(),
        lambda: verify_signature(key, parsed.message, sig),
    )]
    for tee, evaluate in (("az-snp-vtpm", evaluate_az_snp_vtpm), ("az-tdx-vtpm", evaluate_az_tdx_vtpm)):
        raw = json.loads((corpus / "azure" / tee / "evidence-v1.json").read_text())
        evidence = parse_azure_evidence(raw, tee)
        ak = parse_hcl_report(evidence.hcl_report).ak_public()
        rsa_sig = TpmtSignature(ALG_RSASSA, ALG_SHA256, signature=evidence.signature)

        def full(raw: object = raw, tee: str = tee, evaluate: Callable[..., object] = evaluate) -> object:
            report = evaluate(parse_azure_evidence(raw, tee), now=AZ_TIME, report_data=b"challenge")
            assert report  # every corpus case verifies
            return report

        def bare(ak: Any = ak, msg: bytes = evidence.message, s: TpmtSignature = rsa_sig) -> object:
            return verify_signature(ak, msg, s)

        out.append((tee, full, bare))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.tpm_verify", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--corpus", type=Path, default=Path("/work/shared/corpus"))
    args = parser.parse_args(argv)
    print(f"{'tee':<12} {'full median us':>15} {'full p95 us':>12} {'signature median us':>20} {'signature p95 us':>17}")
    for tee, full, signature in cases(args.corpus):
        full()  # warm caches (AMD roots, imports)
        f_med, f_p95 = timed(full, args.rounds)
        s_med, s_p95 = timed(signature, args.rounds)
        print(f"{tee:<12} {f_med:>15.0f} {f_p95:>12.0f} {s_med:>20.0f} {s_p95:>17.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
