"""Code shared by the KBS, the Attestation Service, the RVPS, the guest and the tools.

Everything here is pure (bytes, JSON values and time in; typed values out)
except `storage` backends and `grpc_errors`, which are adapters.
"""
