# Built-in KBS resource policy, stored at first start (an admin policy replaces it).
#
# Releases resources to any attested TEE except the `sample` TEE, whose
# evidence is not trustworthy; the EAR status is not checked.
package policy

default allow = false

allow if {
	data.plugin == "resource"
	evidence := input.submods.cpu0["ear.veraison.annotated-evidence"]
	not evidence.sample
}
