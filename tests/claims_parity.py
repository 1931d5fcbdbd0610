"""Claim-by-claim comparison of our verifiers' claims with upstream's, and the differences docs/claims.md allows.

Claims are compared flattened (`quote.body.mr_td`), value and JSON type
both (`"1"` is not `1`, `true` is not `1`). A claim only we emit must match
an `added` row of docs/claims.md for the TEE, one only upstream emits an
`absent` row; a claim both emit must be equal unless a `different` row
names it. Rows may use shell patterns (`current_tcb_*`).
"""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path
from typing import Any

DOC = Path(__file__).parents[1] / "docs" / "claims.md"
ROW = re.compile(r"^\| `(?P<tee>[a-z-]+)` \| `(?P<claim>[^`]+)` \| (?P<status>added|absent|different) \| (?P<reason>.+) \|$")


def flatten(claims: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in claims.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def documented(tee: str) -> dict[str, list[str]]:
    """`{status: [claim patterns]}` of docs/claims.md's rows for `tee`; every row must give a reason."""
    rows: dict[str, list[str]] = {"added": [], "absent": [], "different": []}
    for line in DOC.read_text().splitlines():
        match = ROW.match(line.strip())
        if match and match["tee"] == tee:
            assert match["reason"].strip(), line
            rows[match["status"]].append(match["claim"])
    return rows


def _allowed(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def parity_problems(tee: str, ours: dict[str, Any], upstream: dict[str, Any]) -> list[str]:
    """Every undocumented difference between `ours` and `upstream` (empty: parity)."""
    rows = documented(tee)
    mine, theirs = flatten(ours), flatten(upstream)
    problems = [f"only ours: {k}" for k in sorted(mine.keys() - theirs.keys()) if not _allowed(k, rows["added"])]
    problems += [f"only upstream: {k}" for k in sorted(theirs.keys() - mine.keys()) if not _allowed(k, rows["absent"])]
    for key in sorted(mine.keys() & theirs.keys()):
        a, b = json.dumps(mine[key], sort_keys=True), json.dumps(theirs[key], sort_keys=True)
        if a != b and not _allowed(key, rows["different"]):
            problems.append(f"{key}: ours {a[:80]} != upstream {b[:80]}")
    return problems


def assert_parity(tee: str, ours: dict[str, Any], upstream: dict[str, Any]) -> None:
    problems = parity_problems(tee, ours, upstream)
    assert not problems, "\n".join(problems)
