"""The built-in resource policies behind `set-resource-policy --allow-all` etc.

Pure data: Rego texts in `package policy`, queried by the KBS as
`data.policy.allow` with the EAR claims as `input` and
`{"plugin", "resource-path", "query"}` as `data` (trustee-server.md 5).

`--default` is the KBS start-up default (release to any attested
non-sample TEE). Upstream's kbs-client uploads `deny_all.rego` for
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
    evidence := input.submods.cpu0["ear.veraison.annotated-evidence"]
    not evidence.sample
}
"""

BUILTIN_POLICIES: dict[str, str] = {
    "allow_all": ALLOW_ALL,
    "deny_all": DENY_ALL,
    "affirming": AFFIRMING,
    "default": DEFAULT,
}
