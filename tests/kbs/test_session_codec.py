"""The stored session record: the verified claims travel with an `Attested` session and nothing else."""

from __future__ import annotations

import json

import pytest

from kbs.core.session import AttestedSession, decode_session, encode_session
from trustee_common.errors import AttestationError

SID = "0" * 32


def test_attested_session_keeps_its_claims() -> None:
    session = AttestedSession(SID, "a.b.c", 1_900_000_000.0, {"exp": 1_900_000_000, "tee-pubkey": {"kty": "EC"}})
    assert decode_session(encode_session(session)) == session


def test_a_session_stored_without_claims_decodes_with_none() -> None:
    raw = json.dumps({"Attested": {"token": "a.b.c", "id": SID, "timeout": "2030-01-01T00:00:00Z"}}).encode()
    session = decode_session(raw)
    assert isinstance(session, AttestedSession) and session.claims is None


@pytest.mark.parametrize("claims", [[], "claims", 1])
def test_claims_that_are_not_an_object_make_the_record_unreadable(claims: object) -> None:
    raw = json.dumps({"Attested": {"token": "a.b.c", "id": SID, "timeout": "2030-01-01T00:00:00Z", "claims": claims}}).encode()
    with pytest.raises(AttestationError):
        decode_session(raw)
