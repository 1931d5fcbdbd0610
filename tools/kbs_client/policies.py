"""The built-in resource policies behind `set-resource-policy --allow-all` etc.

Pure data: Rego texts in `package policy`, queried by the KBS as
`data.policy.allow` with the EAR claims as `input` and
`{"plugin", "resource-path", "query"}` as `data` (trustee-server.md 5).

`--default` is the KBS's own start-up policy, read from the file the KBS
ships (`kbs/policies/default.rego`: release to an attested non-sample TEE
whose cpu0 EAR status is not contraindicated), so the two cannot drift.
Upstream's kbs-client up to v0.17 uploaded its KBS's default policy here
too; since v0.19 it uploads `deny_all.rego` for `--default`, contrary to
its help text. This client keeps what the help says (docs/compatibility.md).
"""

from __future__ import annotations

import importlib.resources

#: The only attestation-policy format; what `set-attestation-policy` always sends as `type`.
POLICY_TYPE = "rego"

ALLOW_ALL = """package policy
import rego.v1

default allow := false

allow if {
    data.plugin == "resource"
}
"""

DENY_ALL = """package policy
import rego.v1

default allow := false
"""

AFFIRMING = """package policy
import rego.v1

default allow := false

allow if {
    count(input.submods) > 0
    every submod in input.submods {
        submod["ear.status"] == "affirming"
    }
}
"""

DEFAULT = importlib.resources.files("kbs").joinpath("policies/default.rego").read_text(encoding="utf-8")

BUILTIN_POLICIES: dict[str, str] = {
    "allow_all": ALLOW_ALL,
    "deny_all": DENY_ALL,
    "affirming": AFFIRMING,
    "default": DEFAULT,
}
