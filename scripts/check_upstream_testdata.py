"""Run our verifiers and extractors on upstream Trustee's own test data (opt-in; not run by the test suite on the network).

    python scripts/check_upstream_testdata.py /path/to/trustee-checkout

Reads these files of a local checkout of confidential-containers/trustee
and prints one line per check, `name  OK: detail`, `name  MISMATCH: detail`
(our result differs from what upstream's own tests expect), `name  FAIL:
detail` (our code refused the input or raised) or `name  skipped: <path>
not found` (the file is not in the checkout):

* `tdx/claims`: `deps/verifier/test_data/tdx_quote_4.dat` through
  `attestation_service.core.verifiers.tdx.verify.evaluate_tdx_quote` (no
  collateral: the quote's signatures, QE binding and PCK chain) at
  `TDX_NOW`, compared claim by claim (flattened, value and JSON type) with
  `parse_tdx_claims_expected.json`, the claims upstream's `parse_tdx_claims`
  test expects, all but `uefi_event_logs`. Differences docs/claims.md lists
  for `tdx` (added / absent / different rows) are allowed and named.
* `tdx/uefi_event_logs`: `CCEL_data` through our event-log parser
  (`attestation_service.core.verifiers.tdx.verifier.replay_event_log`, what
  the `tdx` verifier's step 16 puts in the `uefi_event_logs` claim),
  compared event by event with that JSON's `uefi_event_logs`. Upstream's
  test pairs this CCEL with `tdx_quote_4.dat` without replaying it (its
  verifier does replay, `replay_and_match`); the log does not replay to
  that quote's RTMRs, so `evaluate_tdx_quote` with `event_log=` refuses the
  pair at step 16. The detail says so (when the quote is there).
* `az-snp-vtpm/evidence-{v0,v1,v2,genoa}.json`,
  `az-tdx-vtpm/evidence-{v0,v1}.json` (under `deps/verifier/test_data/`):
  `evaluate_az_snp_vtpm` / `evaluate_az_tdx_vtpm` (TD quote without
  collateral) at the fixed time of `AZURE` with the report data upstream's
  tests pass; OK when ours accepts and `tpm.pcr00` and `report_data` are
  the values upstream's tests assert (both printed).
* `rvps/swid`: `rvps/src/extractors/swid/test-rim.b64` (a message payload:
  standard base64 of the RIM XML) decoded and given to
  `rvps.core.swid.swid_extractor`; `rvps/corim`:
  `rvps/src/extractors/corim/unsigned-example-corim.cbor` given to
  `rvps.core.corim.corim_extractor`. Each must hold the name and first value
  upstream's own extractor test asserts (`RVPS`). Upstream's CoRIM
  extractor returns a list with one entry per measurement (three under the
  asserted name; it asserts the third) that its RVPS stores in turn,
  overwriting; ours returns the stored outcome, the last.

Exit status 0 when every check that ran is OK (and at least one ran), 1
otherwise.
"""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import functools
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TEST_DATA = "deps/verifier/test_data"
CLAIMS_DOC = Path(__file__).resolve().parents[1] / "docs" / "claims.md"
_ROW = re.compile(r"^\| `(?P<tee>[a-z-]+)` \| `(?P<claim>[^`]+)` \| (?P<status>added|absent|different) \| (?P<reason>.+) \|$")
_INDEX = re.compile(r"\[\d+\]")


def _at(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _iso(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")


#: `tdx_quote_4.dat`: its PCK leaf is valid 2023-02-07T08:02:55Z .. 2030-02-07T08:02:55Z (PCK Platform CA until 2033).
TDX_NOW = _at("2026-01-01T00:00:00Z")


@dataclass(frozen=True)
class AzureCase:
    tee: str
    file: str
    report_data: bytes
    #: `tpm.pcr00` upstream's test asserts.
    pcr00: str
    now: datetime.datetime
    #: The certificate window `now` lies in.
    window: str


_CHALLENGE = b"challenge"
_SNP_WINDOW = "VCEK 2025-01-28T16:26:55Z .. 2032-01-28T16:26:55Z"
_TDX_WINDOW = "PCK leaf 2023-09-13T21:00:51Z .. 2030-09-13T21:00:51Z"
#: Upstream's `az_snp_vtpm` / `az_tdx_vtpm` tests: report data passed and `pcr00` asserted. The AMD ASK/ARK
#: (valid until 2045 and later) and the Intel PCK CA / root (2033, 2049) are valid at every `now` below.
AZURE = (
    AzureCase("az-snp-vtpm", "evidence-v0.json", _CHALLENGE, "e15c44796beabf46abcec7c57e590942041e47497e4ec27571c8b7664f48dced",
              _at("2026-01-01T00:00:00Z"), _SNP_WINDOW),
    AzureCase("az-snp-vtpm", "evidence-v1.json", _CHALLENGE, "e15c44796beabf46abcec7c57e590942041e47497e4ec27571c8b7664f48dced",
              _at("2026-01-01T00:00:00Z"), _SNP_WINDOW),
    AzureCase("az-snp-vtpm", "evidence-v2.json",
              bytes.fromhex("982f5c6e45df0ed3f10b6f60b02f0c8390e281300f3805e2279c16168cd6ae9aa398f647caa2338748cd0fd9f5f819ef"),
              "84275b2f4312cd4fc6cbe6b152ad3c3683e513d9f1e23c34fca160c8cca7a6a7",
              _at("2026-01-01T00:00:00Z"), "VCEK 2025-01-28T16:33:43Z .. 2032-01-28T16:33:43Z"),
    AzureCase("az-snp-vtpm", "evidence-genoa.json",
              bytes.fromhex("0218488bae25d2509232bf676f1a66a30d7372add909109b36016ef136f2938ca05475f8b46094de6b64270ea35d950f"),
              "afd689d0bb1c5f36f023fbaf574135f555a28a10c1f6b938d2a25e70c7783338",
              _at("2026-01-01T00:00:00Z"), "VCEK (Genoa) 2025-01-24T02:21:48Z .. 2032-01-24T02:21:48Z"),
    AzureCase("az-tdx-vtpm", "evidence-v0.json", _CHALLENGE, "782b20b10f55cc46e2142cc2145d548698073e5beb82752c8d7f9279f0d8a273",
              _at("2026-01-01T00:00:00Z"), _TDX_WINDOW),
    AzureCase("az-tdx-vtpm", "evidence-v1.json", _CHALLENGE, "782b20b10f55cc46e2142cc2145d548698073e5beb82752c8d7f9279f0d8a273",
              _at("2026-01-01T00:00:00Z"), _TDX_WINDOW),
)


@dataclass(frozen=True)
class Expected:
    path: str
    kind: str  # "swid" | "corim"
    name: str
    first_value: str


#: Upstream's `extract_test_rim` and `extract_test_corim` tests: a reference value name and its first value.
RVPS = (
    Expected("rvps/src/extractors/swid/test-rim.b64", "swid", "NVIDIA_Corporation.GPU.measurement_12",
             "758af96044c700f98a85347be27124d51c05b8784ba216b629b9aaab6d538c759aed9922a133e4ac473564d359b271d5"),
    Expected("rvps/src/extractors/corim/unsigned-example-corim.cbor", "corim",
             "ACME/RoadRunner/31fb5abf-023e-4992-aa4e-95f9c1503bfa/digests",
             "a3a5e715f0cc574a73c3f9bebb6bc24f32ffd5b67b387244c2c909da779a1478"),
)


class MissingFileError(Exception):
    """A file the check needs is not in the checkout."""


@dataclass(frozen=True)
class Outcome:
    status: str  # "OK" | "MISMATCH" | "FAIL" | "skipped"
    detail: str


def need(root: Path, rel: str) -> Path:
    path = root / rel
    if not path.is_file():
        raise MissingFileError(rel)
    return path


# --- claim comparison ---------------------------------------------------------------------------


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """`{"a.b": leaf, "c[0].d": leaf}`; empty objects and arrays are leaves."""
    if isinstance(value, dict) and value:
        items = [(f"{prefix}.{k}" if prefix else str(k), v) for k, v in value.items()]
    elif isinstance(value, list) and value:
        items = [(f"{prefix}[{i}]", v) for i, v in enumerate(value)]
    else:
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, item in items:
        out.update(flatten(item, key))
    return out


def documented(tee: str, doc: Path = CLAIMS_DOC) -> dict[str, list[str]]:
    """`{status: [claim patterns]}` of the deliberate differences docs/claims.md lists for `tee` (none without it)."""
    rows: dict[str, list[str]] = {"added": [], "absent": [], "different": []}
    if doc.is_file():
        for line in doc.read_text(encoding="utf-8").splitlines():
            match = _ROW.match(line.strip())
            if match and match["tee"] == tee:
                rows[match["status"]].append(match["claim"])
    return rows


def _allowed(name: str, patterns: list[str]) -> bool:
    """A row names the claim itself or the array it is an element of (`advisory_ids` for `advisory_ids[0]`)."""
    base = name.split("[", 1)[0]
    return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(base, p) for p in patterns)


def compare(tee: str, ours: dict[str, Any], upstream: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(undocumented differences, documented ones) between flattened `ours` and `upstream`."""
    rows = documented(tee)
    mine, theirs = flatten(ours), flatten(upstream)
    problems: list[str] = []
    allowed: list[str] = []

    def note(text: str, ok: bool) -> None:
        (allowed if ok else problems).append(text)

    for key in sorted(mine.keys() - theirs.keys()):
        note(f"only ours: {key}", _allowed(key, rows["added"]))
    for key in sorted(theirs.keys() - mine.keys()):
        note(f"only upstream: {key}", _allowed(key, rows["absent"]))
    for key in sorted(mine.keys() & theirs.keys()):
        a, b = json.dumps(mine[key], sort_keys=True), json.dumps(theirs[key], sort_keys=True)
        if a != b:
            note(f"{key}: ours {_clip(mine[key])} != upstream {_clip(theirs[key])}", _allowed(key, rows["different"]))
    return problems, allowed


def _clip(value: Any, limit: int = 100) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _verdict(count: str, problems: list[str], allowed: list[str], note: str = "") -> Outcome:
    if problems:
        return Outcome("MISMATCH", f"{len(problems)} difference(s): " + "; ".join(problems))
    detail = count + (f" (documented differences: {'; '.join(allowed)})" if allowed else "") + (f"; {note}" if note else "")
    return Outcome("OK", detail)


# --- the checks ---------------------------------------------------------------------------------


def _why(error: Any) -> str:
    return str(error.detail) if error is not None else "no claims"


def _expected_claims(root: Path) -> dict[str, Any]:
    data = json.loads(need(root, f"{TEST_DATA}/parse_tdx_claims_expected.json").read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError("parse_tdx_claims_expected.json is not a JSON object")
    return data


def check_tdx_claims(root: Path) -> Outcome:
    from attestation_service.core.verifiers.tdx.verify import TdxVerificationInput, evaluate_tdx_quote

    quote = need(root, f"{TEST_DATA}/tdx_quote_4.dat").read_bytes()
    expected = {k: v for k, v in _expected_claims(root).items() if k != "uefi_event_logs"}
    report = evaluate_tdx_quote(TdxVerificationInput(quote=quote, now=TDX_NOW, collateral=None))
    if report.error is not None or report.claims is None:
        return Outcome("FAIL", f"our verifier refuses tdx_quote_4.dat at {_iso(TDX_NOW)}: {_why(report.error)}")
    problems, allowed = compare("tdx", report.claims, expected)
    return _verdict(f"{len(flatten(expected))} claims equal upstream's (no collateral, at {_iso(TDX_NOW)})", problems, allowed)


def check_tdx_event_log(root: Path) -> Outcome:
    from attestation_service.core.verifiers.tdx.verifier import replay_event_log

    log = need(root, f"{TEST_DATA}/CCEL_data").read_bytes()
    expected = _expected_claims(root)
    if "uefi_event_logs" not in expected:
        return Outcome("MISMATCH", "parse_tdx_claims_expected.json has no uefi_event_logs to compare with")
    theirs = expected["uefi_event_logs"]
    if not isinstance(theirs, list):
        return Outcome("MISMATCH", f"upstream's uefi_event_logs is not an array: {_clip(theirs)}")
    result = replay_event_log(log)
    if result is None:
        return Outcome("FAIL", "no event-log parser in this build (attestation_service.core.eventlog)")
    ours = list(result.claims)
    # Event by event over the events both have; a different count is one more difference.
    problems, allowed = compare("tdx", {"uefi_event_logs": ours[: len(theirs)]}, {"uefi_event_logs": theirs[: len(ours)]})
    if len(ours) != len(theirs):
        problems.insert(0, f"ours {len(ours)} events, upstream {len(theirs)}")
    return _verdict(f"{len(ours)} events equal upstream's", problems, allowed, _replay_note(root, log))


def _replay_note(root: Path, log: bytes) -> str:
    """Whether our verifier accepts CCEL_data as the event log of tdx_quote_4.dat (step 16), when the quote is there."""
    from attestation_service.core.verifiers.tdx.verifier import replay_event_log
    from attestation_service.core.verifiers.tdx.verify import TdxVerificationInput, evaluate_tdx_quote

    path = root / TEST_DATA / "tdx_quote_4.dat"
    if not path.is_file():
        return ""
    request = TdxVerificationInput(quote=path.read_bytes(), now=TDX_NOW, collateral=None, event_log=log)
    report = evaluate_tdx_quote(request, None, replay_event_log)
    if report.error is None:
        return "it replays to tdx_quote_4.dat's RTMRs"
    return f"not tdx_quote_4.dat's event log: our verifier refuses the pair at {report.error.detail}"


def check_azure(root: Path, case: AzureCase) -> Outcome:
    from attestation_service.core.verifiers.azure import evaluate_az_snp_vtpm, evaluate_az_tdx_vtpm, parse_azure_evidence

    evidence = json.loads(need(root, f"{TEST_DATA}/{case.tee}/{case.file}").read_text(encoding="utf-8"))
    parsed = parse_azure_evidence(evidence, case.tee)
    evaluate = evaluate_az_snp_vtpm if case.tee == "az-snp-vtpm" else evaluate_az_tdx_vtpm
    report = evaluate(parsed, now=case.now, report_data=case.report_data)
    when = f"version {parsed.version} at {_iso(case.now)} ({case.window})"
    if report.error is not None or report.claims is None:
        return Outcome("FAIL", f"our verifier refuses it, {when}: {_why(report.error)}")
    pcr00 = report.claims.get("tpm", {}).get("pcr00")
    report_data = report.claims.get("report_data")
    problems = []
    if pcr00 != case.pcr00:
        problems.append(f"tpm.pcr00 {pcr00} != upstream's {case.pcr00}")
    if report_data != case.report_data.hex():
        problems.append(f"report_data {report_data} != upstream's {case.report_data.hex()}")
    if problems:
        return Outcome("MISMATCH", f"{when}: " + "; ".join(problems))
    extra = ", TD quote without collateral" if case.tee == "az-tdx-vtpm" else ""
    return Outcome("OK", f"{when}{extra}: pcr00 {pcr00}, report_data {report_data}")


def check_rvps(root: Path, expected: Expected) -> Outcome:
    from rvps.core.corim import corim_extractor
    from rvps.core.swid import swid_extractor
    from trustee_common.b64 import std_decode

    path = need(root, expected.path)
    if expected.kind == "swid":
        values = swid_extractor(std_decode(path.read_text(encoding="ascii").strip(), "test-rim.b64"))
    else:
        values = corim_extractor(path.read_bytes())
    value = values.get(expected.name)
    first = value[0] if isinstance(value, list) and value else value
    if first != expected.first_value:
        names = ", ".join(sorted(values)[:5]) + (", ..." if len(values) > 5 else "")
        got = "absent" if value is None else _clip(value)
        return Outcome("MISMATCH", f"{expected.name}: {got}, upstream's first value {expected.first_value} ({len(values)} values: {names})")
    return Outcome("OK", f"{len(values)} value(s); {expected.name}[0] = {first}")


def checks() -> list[tuple[str, Callable[[Path], Outcome]]]:
    found: list[tuple[str, Callable[[Path], Outcome]]] = [("tdx/claims", check_tdx_claims), ("tdx/uefi_event_logs", check_tdx_event_log)]
    found += [(f"{c.tee}/{c.file}", functools.partial(check_azure, case=c)) for c in AZURE]
    found += [(f"rvps/{e.kind}", functools.partial(check_rvps, expected=e)) for e in RVPS]
    return found


def run(name: str, check: Callable[[Path], Outcome], root: Path) -> Outcome:
    """The check's outcome; a missing file is `skipped`, anything our code raises is `FAIL` (not a crash)."""
    from trustee_common.errors import TrusteeError

    try:
        return check(root)
    except MissingFileError as exc:
        return Outcome("skipped", f"{exc.args[0]} not found")
    except TrusteeError as exc:
        return Outcome("FAIL", f"{type(exc).__name__}: {exc.detail}")
    except Exception as exc:  # a checker reports a bug of ours as FAIL and goes on
        return Outcome("FAIL", f"{type(exc).__name__}: {exc}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("checkout", type=Path, help="a local checkout of confidential-containers/trustee")
    args = parser.parse_args(argv)
    if not args.checkout.is_dir():
        parser.error(f"{args.checkout} is not a directory")
    todo = checks()
    width = max(len(name) for name, _ in todo)
    outcomes = []
    for name, check in todo:
        outcome = run(name, check, args.checkout)
        outcomes.append(outcome)
        print(f"{name:<{width}}  {outcome.status}: {outcome.detail}", flush=True)
    ran = [o for o in outcomes if o.status != "skipped"]
    return 0 if ran and all(o.status == "OK" for o in ran) else 1


if __name__ == "__main__":
    sys.exit(main())
