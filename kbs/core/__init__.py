"""The KBS's pure core: no aiohttp, grpc, trustee_pb, storage driver or file I/O.

Functions take bytes, JSON values and `now`, and return typed results or
raise `TrusteeError` subclasses.
"""
