"""One module per TEE verifier; each implements `attestation_service.core.verifier.Verifier`."""
