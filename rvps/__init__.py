"""Reference Value Provider Service (RVPS).

`rvps.core` parses registration messages and records (pure, time as an
input); `rvps.service` keeps records in a `KeyValueStore`; `rvps.server`
serves them over gRPC (`reference.ReferenceValueProviderService`);
`rvps.client` is the same interface over a gRPC channel, used by the
Attestation Service. See trustee-server.md section 7.
"""
