"""Confidential Data Hub: KBS resources for the guest over gRPC (upstream `grpc-cdh`).

`hub` is the core (resource URI to bytes, token cache), `kbs` the AA and
KBS adapters, `service` the gRPC servicers, `client` the gRPC client used by
the REST server, `config` the config file.
"""
