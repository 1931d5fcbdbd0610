"""The Key Broker Service: KBS protocol 0.4.0 over HTTP(S).

Layout: `kbs.core` is pure (sessions, evidence requests, token and admin
verification, resource policy; no I/O); `kbs.protocol` and
`kbs.resources` orchestrate the core over the storage and Attestation
Service ports; `kbs.http` (aiohttp) and `kbs.as_client` (gRPC) are thin
adapters; `kbs.server` wires everything from `kbs.config`.
"""
