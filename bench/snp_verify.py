"""Benchmark: SEV-SNP verification per evidence against its bare signature checks, measured in the same run.

```
/work/venv/bin/python -m bench.snp_verify [--corpus /work/shared/corpus/snp] [--rounds 200] [--json]
```

For each valid corpus case (virtee Milan v2, Trustee Genoa e2e wire JSON,
Trustee VLEK) it times `verify_snp_report` end to end (parsing, product,
chain, extensions, signature, claims; certificates already loaded, as in
the AS) and, on the same objects, the bare cryptography underneath: the
P-384 ECDSA report signature, the one RSA-PSS (SHA-384, salt 48) check
done per report (VCEK/VLEK <- ASK/ASVK; the shipped ARK and ASK/ASVK are
verified once at load) and, for scale, all three chain signatures. verify
minus ECDSA minus the one RSA-PSS is this project's overhead. Prints median
microseconds per operation; no thresholds (tests never assert timings).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attestation_service.core.verifiers.snp import (
    SnpVerificationInput,
    amd_roots,
    load_certificates,
    parse_evidence,
    parse_report,
    report_signature_valid,
    verify_snp_report,
)
from attestation_service.core.verifiers.snp.certs import issued_by
from cryptography import x509

DEFAULT_CORPUS = Path("/work/shared/corpus/snp")


def _at(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def cases(corpus: Path) -> list[tuple[str, bytes, tuple[x509.Certificate, ...], datetime.datetime]]:
    milan = corpus / "virtee-milan"
    genoa = parse_evidence(json.loads((corpus / "trustee-genoa-e2e" / "evidence.json").read_text()))
    vlek = corpus / "trustee-vlek"
    return [
        ("virtee-milan (v2, VCEK)", (milan / "report.bin").read_bytes(),
         tuple(load_certificates((milan / "vcek.der").read_bytes(), "vcek")), _at("2025-01-01T00:00:00Z")),
        ("trustee-genoa-e2e (v3, wire JSON)", genoa.report, genoa.certificates, _at("2026-01-01T00:00:00Z")),
        ("trustee-vlek (v3, VLEK)", (vlek / "report.bin").read_bytes(),
         tuple(load_certificates((vlek / "vlek.der").read_bytes(), "vlek")), _at("2025-06-01T00:00:00Z")),
    ]


def median_us(run: Callable[[], object], rounds: int) -> float:
    run()  # warm caches (pinned roots, imports)
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e6


def measure(corpus: Path, rounds: int) -> list[dict[str, Any]]:
    rows = []
    for name, raw, certs, now in cases(corpus):
        report = parse_report(raw)
        vek = certs[0]
        product = report.product or ("Milan" if "milan" in name else "Genoa")
        roots = amd_roots()[product]
        intermediate = roots.asvk if report.signing_key == 1 else roots.ask
        request = SnpVerificationInput(raw, now, certs)

        vek_key = vek.public_key()

        def bare_ecdsa(report: Any = report, key: Any = vek_key) -> None:
            assert report_signature_valid(report, key)

        def bare_pss(vek: x509.Certificate = vek, mid: x509.Certificate = intermediate) -> None:
            assert issued_by(vek, mid)

        def bare_chain(vek: x509.Certificate = vek, mid: x509.Certificate = intermediate, ark: x509.Certificate = roots.ark) -> None:
            assert issued_by(ark, ark) and issued_by(mid, ark) and issued_by(vek, mid)

        full = median_us(functools.partial(verify_snp_report, request), rounds)
        ecdsa = median_us(bare_ecdsa, rounds)
        pss = median_us(bare_pss, rounds)
        chain = median_us(bare_chain, rounds)
        rows.append({"evidence": name, "verify_us": round(full, 1), "ecdsa_p384_us": round(ecdsa, 1),
                     "rsa_pss_vek_us": round(pss, 1), "rsa_pss_chain_us": round(chain, 1),
                     "overhead_us": round(full - ecdsa - pss, 1)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.snp_verify", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help=f"SNP corpus folder (default {DEFAULT_CORPUS})")
    parser.add_argument("--rounds", type=int, default=200, help="timed runs per measurement (median reported)")
    parser.add_argument("--json", action="store_true", help="print JSON rows")
    args = parser.parse_args(argv)
    rows = measure(args.corpus, args.rounds)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'evidence':<36} {'verify':>9} {'ECDSA P-384':>12} {'1x RSA-PSS':>11} {'3x RSA-PSS':>11} {'overhead':>9}"
          f"   (median us, {args.rounds} rounds)")
    for r in rows:
        print(f"{r['evidence']:<36} {r['verify_us']:>9} {r['ecdsa_p384_us']:>12} {r['rsa_pss_vek_us']:>11} {r['rsa_pss_chain_us']:>11}"
              f" {r['overhead_us']:>9}")
    print("verify = full verify_snp_report; per report it runs 1 ECDSA + 1 RSA-PSS (VEK <- ASK/ASVK): the shipped ARK\n"
          "and ASK/ASVK are verified once at load. overhead = verify - ECDSA - 1x RSA-PSS. 3x RSA-PSS = the whole chain.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
