"""Attestation Service (CoCo AS): verifies evidence and issues EAR tokens.

`attestation_service.core` is pure (request parsing, verifiers, claims,
policy evaluation, the EAR token); `service` orchestrates one request with
the policy store and the reference-value provider; `grpc_server` serves
`attestation.AttestationService` plus the RVPS proxy; `__main__` wires it
all from config (trustee-server.md section 6).
"""
