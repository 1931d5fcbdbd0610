"""`verify-<tee>`: time per evidence of our verifiers on the real corpus (/work/shared/corpus, PROVENANCE.md).

Collateral and certificates are loaded once, as the AS caches them; each
figure is the median (and p95) wall time of one verification in
microseconds. TDX is also verified by the `dcap-qvl` package on the same
quote and collateral in the same run (its Rust verifier, our reference
point). SNP shows the bare signature checks underneath (`bench.snp_verify`);
TPM and the Azure vTPM evidence the bare quote signature (`bench.tpm_verify`).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.tpm_verify import timed

DEFAULT_CORPUS = Path("/work/shared/corpus")
TEES = ("tdx", "snp", "tpm", "az-snp-vtpm", "az-tdx-vtpm")
TDX_CASE = ("dcap-qvl-v4-uptodate", "2025-07-01T00:00:00+00:00")


def timed_us(run: Callable[[], object], rounds: int) -> dict[str, float]:
    run()  # warm caches (pinned roots, imports)
    median, p95 = timed(run, rounds)
    return {"median_us": round(median, 1), "p95_us": round(p95, 1)}


def tdx(corpus: Path, rounds: int) -> list[dict[str, Any]]:
    import dcap_qvl
    from attestation_service.core.verifiers.tdx import TdxCollateral, TdxVerificationInput, evaluate_tdx_quote
    from attestation_service.core.verifiers.tdx.collateral import CollateralVerifier

    name, at = TDX_CASE
    folder = corpus / "tdx" / name
    quote = (folder / "quote.bin").read_bytes()
    text = (folder / "collateral.json").read_text()
    now = datetime.datetime.fromisoformat(at)
    collateral = TdxCollateral.from_json(json.loads(text))
    bundle = dcap_qvl.QuoteCollateralV3.from_json(text)

    cache = CollateralVerifier()  # as the AS keeps one: collateral verified once per bundle

    def ours() -> None:
        report = evaluate_tdx_quote(TdxVerificationInput(quote, now, collateral), cache)
        if report.error is not None:
            raise AssertionError(f"our verifier rejected {name}: {report.error.detail}")

    def theirs() -> None:
        dcap_qvl.verify(quote, bundle, int(now.timestamp()))

    mine, oracle = timed_us(ours, rounds), timed_us(theirs, rounds)
    ratio = round(mine["median_us"] / oracle["median_us"], 2)
    return [{"evidence": name, "ours": mine, "dcap_qvl": oracle, "ratio_ours_to_dcap_qvl": ratio}]


def snp(corpus: Path, rounds: int) -> list[dict[str, Any]]:
    from bench.snp_verify import measure

    return [{"evidence": row["evidence"], "ours": {"median_us": row["verify_us"]}, "bare_signature": {"median_us": row["ecdsa_p384_us"]},
             "bare_rsa_pss_vek_us": row["rsa_pss_vek_us"], "overhead_us": row["overhead_us"]} for row in measure(corpus / "snp", rounds)]


def vtpm(corpus: Path, rounds: int, tee: str) -> list[dict[str, Any]]:
    from bench.tpm_verify import cases

    rows = []
    for name, full, signature in cases(corpus):
        if name == tee:
            rows.append({"evidence": name, "ours": timed_us(full, rounds), "bare_signature": timed_us(signature, rounds)})
    return rows


def verify(tee: str, corpus: Path, rounds: int) -> dict[str, Any]:
    if tee == "tdx":
        rows = tdx(corpus, rounds)
    elif tee == "snp":
        rows = snp(corpus, rounds)
    elif tee in TEES:
        rows = vtpm(corpus, rounds, tee)
    else:
        raise ValueError(f"unknown evidence type {tee!r}; known: {', '.join(TEES)}")
    return {"tee": tee, "rounds": rounds, "rows": rows}
