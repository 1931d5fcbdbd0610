# Built-in KBS resource policy, stored at first start (an admin policy replaces it).
#
# Releases a resource only when the first CPU appraisal (submod cpu0) is
# of a TEE other than `sample` (whose evidence proves nothing) and its
# EAR status is not "contraindicated". Stricter than upstream's default,
# which never looks at the status: a contraindicated appraisal means the
# attestation policy found evidence it must not trust (a debug TD, an SNP
# guest at VMPL != 0, an unregistered PCR 11, hardware it could not
# appraise as genuine). docs/trust-decisions.md explains each TEE.
package policy

default allow = false

allow if {
	data.plugin == "resource"
	appraisal := input.submods.cpu0
	not appraisal["ear.veraison.annotated-evidence"].sample
	appraisal["ear.veraison.annotated-evidence"]
	appraisal["ear.status"] != "contraindicated"
}
