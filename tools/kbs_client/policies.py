"""The built-in resource policies behind `set-resource-policy --allow-all` etc.

Pure data: Rego texts in `package policy`, queried by the KBS as
`data.policy.allow` with the EAR claims as `input` and
`{"plugin", "resource-path", "query"}` as `data` (trustee-server.md 5).

`--default` is the KBS start-up default (kbs/policies/default.rego: release
to an attested non-sample TEE whose cpu0 EAR status is not contraindicated). Upstream's kbs-client uploads `deny_all.rego` for
`--default`, contrary to its help text; this client does what the help says.
"""

from __future__ import annotations

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

DEFAULT = """package policy
import rego.v1

default allow := false

allow if {
    data.plugin == "resource"
    appraisal := input.submods.cpu0
    not appraisal["ear.veraison.annotated-evidence"].sample
    appraisal["ear.veraison.annotated-evidence"]
    appraisal["ear.status"] != "contraindicated"
}
"""

BUILTIN_POLICIES: dict[str, str] = {
    "allow_all": ALLOW_ALL,
    "deny_all": DENY_ALL,
    "affirming": AFFIRMING,
    "default": DEFAULT,
}
