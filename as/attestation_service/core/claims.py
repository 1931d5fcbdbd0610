"""`transform_claims`: verifier claims into the annotated evidence (policy input).

`report_data` and `init_data` move to the top level next to
`runtime_data_claims` / `init_data_claims`; everything else stays under
the TEE name (trustee-server.md 6.4 step 5). With `verbose=False` the
`additional-evidence` key is dropped from `runtime_data_claims`, as
upstream's `verbose_token = false`.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from attestation_service.core.request import VerificationRequest
from attestation_service.core.verifier import Claims, RuntimeDataAware, Verifier, verifier_for


def transform_claims(
    tee: str, claims: Claims, runtime_data_claims: Any, init_data_claims: Any, *, verbose: bool = True
) -> dict[str, Any]:
    rest = dict(claims)
    annotated: dict[str, Any] = {}
    if "init_data" in rest:
        annotated["init_data"] = rest.pop("init_data")
        annotated["init_data_claims"] = init_data_claims
    if "report_data" in rest:
        annotated["report_data"] = rest.pop("report_data")
        if not verbose and isinstance(runtime_data_claims, dict):
            runtime_data_claims = {k: v for k, v in runtime_data_claims.items() if k != "additional-evidence"}
        annotated["runtime_data_claims"] = runtime_data_claims
    annotated[tee] = rest
    return annotated


def annotate(
    request: VerificationRequest, verifiers: Mapping[str, Verifier], now: datetime.datetime, *, verbose: bool = True
) -> list[tuple[dict[str, Any], str]]:
    """Verify one request and return `(annotated evidence, tee class)` per attested item."""
    verifier = verifier_for(verifiers, request.tee)
    if isinstance(verifier, RuntimeDataAware):
        results = verifier.evaluate_with_runtime_data(
            request.evidence, request.report_data, request.init_data_digest, now, request.runtime_data_claims
        )
    else:
        results = verifier.evaluate(request.evidence, request.report_data, request.init_data_digest, now)
    return [
        (transform_claims(request.tee, claims, request.runtime_data_claims, request.init_data_claims, verbose=verbose), tee_class)
        for claims, tee_class in results
    ]
