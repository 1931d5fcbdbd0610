"""Attestation Agent: evidence and tokens for the guest over gRPC (upstream `grpc-aa`).

`agent` is the core, `tokens` the KBS / CoCo AS adapters, `service` the gRPC
servicer, `client` the gRPC client used by the CDH and the REST server, and
`serving` the plumbing the three guest servers share.
"""
