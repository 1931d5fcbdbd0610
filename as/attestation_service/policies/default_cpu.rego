# Default EAR policy for CPU TEEs (policy id "default_cpu").
#
# Starts every appraisal as contraindicated (executables 33, hardware 97,
# configuration 36) and lowers a claim only when the evidence of the TEE
# present in the input matches the reference values served by the RVPS.
# `query_reference_value(name)` returns the registered value or null.
# Behaviour follows upstream's ear_default_policy_cpu (trustee-server.md 6.6),
# except that a debug TD is contraindicated (see the tdx section) and so is an
# SNP guest that is debuggable or attests from a VMPL other than 0 (snp section), and
# a TPM's hardware is genuine only with an AK the verifier trusted (tpm section). The sample
# and tdx rules are exercised by tests (tests/as, tests/tdx_eventlog).
package policy

import rego.v1

default executables := 33

default hardware := 97

default configuration := 36

trust_claims := {
	"instance-identity": 0,
	"configuration": configuration,
	"executables": executables,
	"file-system": 0,
	"hardware": hardware,
	"runtime-opaque": 0,
	"storage-opaque": 0,
	"sourced-data": 0,
}

# --- sample ----------------------------------------------------------------

executables := 3 if {
	input.sample.launch_digest in query_reference_value("launch_digest")
}

hardware := 2 if {
	input.sample.svn in query_reference_value("svn")
	input.sample.platform_version.major == query_reference_value("major_version")
	minimum_minor := query_reference_value("minimum_minor_version")
	is_number(minimum_minor)
	input.sample.platform_version.minor >= minimum_minor
}

configuration := 2 if {
	input.sample.debug == false
}

# --- snp -------------------------------------------------------------------

executables := 3 if {
	input.snp.measurement in query_reference_value("snp_launch_measurement")
}

hardware := 2 if {
	input.snp.reported_tcb_bootloader in query_reference_value("snp_bootloader")
	input.snp.reported_tcb_microcode in query_reference_value("snp_microcode")
	input.snp.reported_tcb_snp in query_reference_value("snp_snp_svn")
	input.snp.reported_tcb_tee in query_reference_value("snp_tee_svn")
}

configuration := 2 if {
	snp_guest_policy_safe
	input.snp.platform_smt_enabled == query_reference_value("snp_smt_enabled")
	input.snp.platform_tsme_enabled == query_reference_value("snp_tsme_enabled")
	input.snp.policy_abi_major == query_reference_value("snp_guest_abi_major")
	input.snp.policy_abi_minor == query_reference_value("snp_guest_abi_minor")
	input.snp.policy_single_socket == query_reference_value("snp_single_socket")
	input.snp.policy_smt_allowed == query_reference_value("snp_smt_allowed")
} else := 3 if {
	snp_guest_policy_safe
}

snp_guest_policy_safe if {
	input.snp.policy_debug_allowed == false
	input.snp.policy_migrate_ma == false
	input.snp.vmpl == 0
}

# Not in upstream's policy (upstream's verifier rejects VMPL != 0 outright;
# this project's verifier reports `vmpl` and leaves the decision here): a
# report requested from VMPL 1-3 or of a debug guest makes the configuration
# unsupportable (96), so the appraisal is contraindicated. An SVSM deployment
# whose guest attests from a higher VMPL sets its own policy accepting it.
configuration := 96 if {
	input.snp.vmpl != 0
} else := 96 if {
	input.snp.policy_debug_allowed == true
}

# --- tdx -------------------------------------------------------------------

executables := 3 if {
	tdx_runtime_measurements
	tdx_kernel_loaded
	tdx_kernel_parameters
} else := 4 if {
	tdx_runtime_measurements
}

tdx_runtime_measurements if {
	input.tdx.quote.body.rtmr_1 in query_reference_value("rtmr_1")
	input.tdx.quote.body.rtmr_2 in query_reference_value("rtmr_2")
}

tdx_kernel_loaded if {
	some event in input.tdx.uefi_event_logs
	event.type_name == "EV_EFI_BOOT_SERVICES_APPLICATION"
	"File(kernel)" in event.details.device_paths
	some digest in event.digests
	digest.digest == query_reference_value("tdvfkernel")
}

tdx_kernel_parameters if {
	some event in input.tdx.uefi_event_logs
	event.type_name == "EV_EVENT_TAG"
	event.details.string == "LOADED_IMAGE::LoadOptions"
	some digest in event.digests
	digest.digest == query_reference_value("tdvfkernelparams")
}

hardware := 2 if {
	tdx_quote_platform(input.tdx.quote.header, input.tdx.quote.body.mr_td)
	input.tdx.tcb_status == "UpToDate"
	input.tdx.collateral_expiration_status == "0"
}

# The header and MRTD only (not the whole quote, whose report data binds each
# request's nonce): appraisals of TDs with the same claims are reused.
tdx_quote_platform(header, mr_td) if {
	header.tee_type == "81000000"
	header.vendor_id == "939a7233f79c4ca9940a0db3957f0607"
	mr_td in query_reference_value("mr_td")
}

configuration := 2 if {
	input.tdx.td_attributes.debug == false
	input.tdx.quote.body.xfam in query_reference_value("xfam")
}

# Not in upstream's policy (there a debug TD keeps the default 36, a
# "warning"): a debug TD's memory is readable by the host, so its
# configuration is unsupportable (96) and the appraisal contraindicated.
configuration := 96 if {
	input.tdx.td_attributes.debug == true
}

# --- az-snp-vtpm -------------------------------------------------------------

executables := 3 if {
	input["az-snp-vtpm"].measurement in query_reference_value("measurement")
	input["az-snp-vtpm"].tpm.pcr11 in query_reference_value("snp_pcr11")
}

hardware := 2 if {
	input["az-snp-vtpm"].reported_tcb_bootloader in query_reference_value("tcb_bootloader")
	input["az-snp-vtpm"].reported_tcb_microcode in query_reference_value("tcb_microcode")
	input["az-snp-vtpm"].reported_tcb_snp in query_reference_value("tcb_snp")
	input["az-snp-vtpm"].reported_tcb_tee in query_reference_value("tcb_tee")
}

configuration := 2 if {
	input["az-snp-vtpm"].platform_smt_enabled in query_reference_value("smt_enabled")
	input["az-snp-vtpm"].platform_tsme_enabled in query_reference_value("tsme_enabled")
	input["az-snp-vtpm"].policy_abi_major in query_reference_value("abi_major")
	input["az-snp-vtpm"].policy_abi_minor in query_reference_value("abi_minor")
	input["az-snp-vtpm"].policy_single_socket in query_reference_value("single_socket")
	input["az-snp-vtpm"].policy_smt_allowed in query_reference_value("smt_allowed")
}

# --- az-tdx-vtpm -------------------------------------------------------------

executables := 3 if {
	input["az-tdx-vtpm"].tpm.pcr11 in query_reference_value("tdx_pcr11")
}

hardware := 2 if {
	tdx_quote_platform(input["az-tdx-vtpm"].quote.header, input["az-tdx-vtpm"].quote.body.mr_td)
	input["az-tdx-vtpm"].tcb_status == "UpToDate"
}

configuration := 2 if {
	input["az-tdx-vtpm"].quote.body.xfam in query_reference_value("xfam")
}

# --- tpm -------------------------------------------------------------------

# The verifier refuses a quote whose AK no anchor holds (a configured trusted
# AK, the reference value `trusted_aks`, or an AK/EK CA) and says which
# anchor it used in `ak_trust.method`. Upstream's verifier accepts any AK and
# this rule needs `ak_public in trusted_aks`; here the verifier's decision
# (whichever anchor) is what counts, and hardware is only genuine (2) with a
# trusted AK: defence in depth should a verifier ever report another method.
tpm_ak_trusted if input.tpm.ak_trust.method in {"reference_value", "ca"}

executables := 3 if {
	input.tpm.pcr11 in query_reference_value("tpm_pcr11")
	tpm_ak_trusted
}

# Not in upstream's policy (there a mismatching PCR 11 only leaves executables
# at 33, a "warning"): once PCR 11 reference values are registered, a PCR 11
# outside them means software other than the approved one ran: 96, contraindicated.
executables := 96 if {
	input.tpm
	query_reference_value("tpm_pcr11") != null
	not input.tpm.pcr11 in query_reference_value("tpm_pcr11")
}

hardware := 2 if tpm_ak_trusted

configuration := 0 if input.tpm

# --- se --------------------------------------------------------------------

executables := 3 if input.se

hardware := 2 if input.se

configuration := 2 if input.se

# --- extensions --------------------------------------------------------------

# Workload identifiers validated through the Kata agent policy carried in the
# init-data (`init_data_claims.agent_policy_claims`).
container_images := [image |
	some container in input.init_data_claims.agent_policy_claims.containers
	image := container.OCI.Annotations["io.kubernetes.cri.image-name"]
]

container_uids := [uid |
	some container in input.init_data_claims.agent_policy_claims.containers
	uid := container.OCI.Process.User.UID
]

images_identifier := {"container_images": container_images} if {
	count(container_images) > 0
} else := {}

uids_identifier := {"container_uids": container_uids} if {
	count(container_uids) > 0
} else := {}

extensions := [{
	"name": "ear.trustee.identifiers",
	"key": -18,
	"value": {"validated": object.union_n([images_identifier, uids_identifier])},
}]
