"""The resource-policy snippet of docs/kubevirt-tdx.md, evaluated as written.

The snippet is taken from the document, compiled as the KBS compiles resource
policies, and given the input the KBS builds (`policy_input`) from claims in
the shape the AS emits (`transform_claims`: `init_data` and `init_data_claims`
next to the `tdx` claims). It allows the TD launched with the bundled
init-data and refuses a different MRCONFIGID, a guest that sent no init-data,
a debug TD and a non-affirming appraisal. Its digest is `trustee initdata
digest --tee tdx` of deploy/kubevirt/initdata.toml.
"""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from attestation_service.core.claims import transform_claims
from attestation_service.core.initdata import parse_init_data_toml

from kbs.core.resource_policy import allows, policy_data, policy_input, resource_policy_spec
from tests.procs import script
from trustee_common.rego import RegoPolicy

ROOT = Path(__file__).parents[2]
INIT_DATA = ROOT / "deploy" / "kubevirt" / "initdata.toml"


def snippet() -> str:
    (text,) = re.findall(r"```rego\n(.*?)```", (ROOT / "docs" / "kubevirt-tdx.md").read_text(), re.S)
    return text


def digest_hex() -> str:
    result = subprocess.run([script("trustee"), "initdata", "digest", "--tee", "tdx", str(INIT_DATA)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def token_claims(mr_config_id: str, *, sent_init_data: bool = True, debug: bool = False,
                 status: str = "affirming") -> dict[str, Any]:
    tdx: dict[str, Any] = {"quote": {"body": {"mr_config_id": mr_config_id}}, "td_attributes": {"debug": debug}}
    if sent_init_data:  # the TDX verifier emits init_data (= MRCONFIGID) and the AS the init-data claims
        tdx["init_data"] = mr_config_id
    init_claims = parse_init_data_toml(INIT_DATA.read_text()).claims if sent_init_data else None
    annotated = transform_claims("tdx", tdx, None, init_claims)
    return {"submods": {"cpu0": {"ear.status": status, "ear.veraison.annotated-evidence": annotated}}}


@pytest.fixture(scope="module")
def policy() -> RegoPolicy:
    return RegoPolicy.from_spec(resource_policy_spec(snippet()))


def decide(policy: RegoPolicy, claims: dict[str, Any]) -> bool:
    return allows(policy.evaluate(policy_input(claims, snippet()), policy_data("resource", "default/app/key", {})))


def test_the_snippet_pins_the_bundled_init_data_digest() -> None:
    assert f'"{digest_hex()}"' in snippet()


def test_allows_the_td_launched_with_the_init_data(policy: RegoPolicy) -> None:
    assert decide(policy, token_claims(digest_hex()))


@pytest.mark.parametrize(
    "change",
    [
        lambda: token_claims("00" * 48),
        lambda: token_claims(digest_hex(), sent_init_data=False),
        lambda: token_claims(digest_hex(), debug=True),
        lambda: token_claims(digest_hex(), status="warning"),
    ],
    ids=["other-mrconfigid", "no-init-data", "debug-td", "warning"],
)
def test_refuses(policy: RegoPolicy, change: Any) -> None:
    assert not decide(policy, change())


def test_refuses_init_data_naming_another_kbs(policy: RegoPolicy) -> None:
    claims = token_claims(digest_hex())
    other = copy.deepcopy(claims)
    other["submods"]["cpu0"]["ear.veraison.annotated-evidence"]["init_data_claims"]["aa.toml"]["token_configs"]["kbs"]["url"] = "https://x"
    assert decide(policy, claims) and not decide(policy, other)
