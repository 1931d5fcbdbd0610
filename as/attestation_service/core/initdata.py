"""Init-data TOML: digest and the `init_data_claims` the policy sees.

The document is `version`, `algorithm` (sha256|sha384|sha512) and a
`[data]` table of strings (guest-components.md section 7); other top-level
keys are ignored, as by upstream's parsers (the digest covers them anyway). The digest is the
algorithm over the WHOLE TOML text as received (no re-encoding). Claims are
the `data` map with `cdh.toml` / `aa.toml` parsed into objects when they
parse, and a Kata agent policy (`policy.rego` holding `policy_data := {`)
turned into `agent_policy_claims` (trustee-server.md 6.4 step 3).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from trustee_common.bounded import json_depth, loads_toml
from trustee_common.canonical import HashAlgorithm
from trustee_common.errors import MalformedRequestError, clip_repr

PARSED_TOML_KEYS = ("cdh.toml", "aa.toml")
AGENT_POLICY_KEY = "policy.rego"
AGENT_POLICY_MARKER = "policy_data := {"
MAX_POLICY_DATA_DEPTH = 64


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


@dataclass(frozen=True, slots=True)
class InitData:
    digest: bytes
    claims: dict[str, Any]


def parse_init_data_toml(text: str) -> InitData:
    doc = loads_toml(text, "init_data_toml")
    if not isinstance(doc.get("version"), str):
        raise MalformedRequestError("init_data_toml: 'version' is missing or not a string")
    algorithm = doc.get("algorithm")
    if not isinstance(algorithm, str) or algorithm not in {a.value for a in HashAlgorithm}:
        raise MalformedRequestError(f"init_data_toml: 'algorithm' must be one of sha256, sha384, sha512, got {clip_repr(algorithm)}")
    data = doc.get("data", {})
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise MalformedRequestError("init_data_toml: [data] must be a table of strings")
    return InitData(HashAlgorithm(algorithm).digest(text.encode("utf-8")), init_data_claims(data))


def init_data_claims(data: dict[str, str]) -> dict[str, Any]:
    claims: dict[str, Any] = dict(data)
    for key in PARSED_TOML_KEYS:
        if key in data:
            try:
                claims[key] = loads_toml(data[key], key)
            except MalformedRequestError:
                pass
    agent_policy = data.get(AGENT_POLICY_KEY)
    if agent_policy is not None:
        parsed = _agent_policy_data(agent_policy)
        if parsed is not None:
            claims["agent_policy_claims"] = parsed
            del claims[AGENT_POLICY_KEY]
    return claims


def _agent_policy_data(policy: str) -> Any:
    """The JSON object after `policy_data := `, or None when there is none or it does not parse."""
    start = policy.find(AGENT_POLICY_MARKER)
    if start < 0:
        return None
    begin = start + len(AGENT_POLICY_MARKER) - 1
    if json_depth(policy[begin:]) > MAX_POLICY_DATA_DEPTH:
        return None
    try:
        value, _ = json.JSONDecoder(parse_constant=_no_constant).raw_decode(policy, begin)
    except (ValueError, RecursionError):
        return None
    return value
