# Default EAR policy for GPU devices (policy id "default_gpu").
#
# Starts as contraindicated (hardware 97, executables 33, configuration 36).
# sampledevice: hardware 2 when its svn is in the reference value
# "device_svn" (upstream reads `data.reference.device_svn`, which is never
# supplied; this project queries the RVPS instead). executables and
# configuration keep their defaults, so a matching sampledevice is "warning".
# nvidia: upstream's ear_default_policy_gpu rules (trustee-server.md 6.6).
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

# --- sampledevice ------------------------------------------------------------

hardware := 2 if {
	input.sampledevice.svn in query_reference_value("device_svn")
}

# --- nvidia ------------------------------------------------------------------

hardware := 2 if {
	certificate_chain_valid("x-nvidia-gpu-attestation-report-cert-chain")
	input.nvidia["x-nvidia-gpu-attestation-report-cert-chain-fwid-match"] == true
	input.nvidia["x-nvidia-gpu-attestation-report-parsed"] == true
	input.nvidia["x-nvidia-gpu-attestation-report-signature-verified"] == true
	input.nvidia["x-nvidia-gpu-arch-check"] == true
}

configuration := 2 if {
	nvidia_secure_boot
	input.nvidia["x-nvidia-gpu-vbios-version"] in query_reference_value("allowed_vbios_versions")
	input.nvidia["x-nvidia-gpu-driver-version"] in query_reference_value("allowed_driver_versions")
} else := 3 if {
	nvidia_secure_boot
}

nvidia_secure_boot if {
	input.nvidia.secboot == true
	input.nvidia.dbgstat == "disabled"
}

executables := 3 if {
	reference_manifest_valid("vbios")
	reference_manifest_valid("driver")
	input.nvidia.measres == "success"
}

certificate_chain_valid(name) if {
	input.nvidia[name]["x-nvidia-cert-ocsp-status"] == "good"
	input.nvidia[name]["x-nvidia-cert-status"] == "valid"
}

reference_manifest_valid(kind) if {
	certificate_chain_valid(sprintf("x-nvidia-gpu-%s-rim-cert-chain", [kind]))
	every check in ["fetched", "measurements-available", "schema-validated", "signature-verified", "version-match"] {
		input.nvidia[sprintf("x-nvidia-gpu-%s-rim-%s", [kind, check])] == true
	}
}

extensions := []
