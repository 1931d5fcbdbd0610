"""The error hierarchy: stable variants that survive a trip through a transport."""

import pytest

from trustee_common import errors as e
from trustee_common.grpc_errors import STATUS_BY_ERROR, status_for


def _all(cls: type[e.TrusteeError]) -> list[type[e.TrusteeError]]:
    return [cls] + [sub for child in cls.__subclasses__() for sub in _all(child)]


# EvidenceError and its verifier-specific subclasses (QuoteParseError, ...) all travel as AttestationError.
@pytest.mark.parametrize(
    "cls",
    [c for c in _all(e.TrusteeError) if c.__module__ == e.__name__ and c not in (e.TrusteeError, e.EvidenceError)],
)
def test_variant_round_trips(cls: type[e.TrusteeError]) -> None:
    error = cls("detail text")
    forbidden = cls is e.AdminForbiddenError
    rebuilt = e.error_from_variant(error.variant, error.detail, forbidden=forbidden)
    assert type(rebuilt) is cls
    assert rebuilt.detail == "detail text"
    shown = "detail text" if not cls.internal else rebuilt.public_detail
    assert rebuilt.to_json() == {"type": e.ERROR_TYPE_PREFIX + cls.variant, "detail": shown}


@pytest.mark.parametrize("cls", [e.StorageError, e.InternalError])
def test_internal_details_stay_in_the_log(cls: type[e.TrusteeError]) -> None:
    error = cls("cannot open SQLite store /var/lib/kbs/kbs.db at 10.0.0.5:5432")
    assert "/var/lib" not in error.to_json()["detail"] and "10.0.0.5" not in error.public_detail
    assert error.variant in error.public_detail


def test_client_text_is_clipped() -> None:
    assert e.clip("x" * 100_000) == "x" * (e.CLIENT_TEXT_CHARS - 1) + e.ELLIPSIS
    assert e.clip("short") == "short"
    assert len(e.clip_repr("y" * 1000)) == e.CLIENT_TEXT_CHARS
    assert len(e.MalformedRequestError("z" * 100_000).detail) == e.MAX_DETAIL_CHARS


def test_grpc_message_fits_the_trailer_limit() -> None:
    from trustee_common.grpc_errors import MAX_MESSAGE_BYTES, wire_message

    for text in ("a" * 5000, "é" * 5000, "\U0001f600" * 5000):
        message = wire_message(text)
        assert len(message.encode()) <= MAX_MESSAGE_BYTES and message.endswith(e.ELLIPSIS)
    assert wire_message("short") == "short"


def test_every_error_class_has_a_grpc_status() -> None:
    """Each shared class maps to a code itself or through an ancestor below the root (others fall back to INTERNAL)."""
    for cls in _all(e.TrusteeError):
        if cls is not e.TrusteeError and cls.__module__ == e.__name__:
            assert any(base in STATUS_BY_ERROR for base in cls.__mro__), f"{cls.__name__} has no gRPC status"


def test_status_for_uses_the_closest_mapped_ancestor() -> None:
    import grpc

    assert status_for(e.EvidenceError("x")) == STATUS_BY_ERROR[e.AttestationError] == grpc.StatusCode.PERMISSION_DENIED
    assert status_for(e.ResourceNotFoundError("x")) == grpc.StatusCode.NOT_FOUND


def test_unknown_variant_becomes_upstream_error() -> None:
    assert isinstance(e.error_from_variant("Whatever", "x"), e.UpstreamError)


def test_every_variant_is_documented_in_the_errors_table() -> None:
    import importlib
    from pathlib import Path

    for module in ("kbs.errors", "guest.attestation_agent.serving", "guest.cdh.sealed", "kbs_client.admin", "trustee_common.jose",
                   "clevis_trustee.jwe"):
        importlib.import_module(module)
    table = (Path(__file__).resolve().parents[2] / "docs" / "errors.md").read_text()
    missing = sorted({cls.variant for cls in _all(e.TrusteeError)} - {v for v in table.split("`")})
    assert not missing, f"variants missing from docs/errors.md: {missing}"
