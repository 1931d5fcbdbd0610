"""The real GCP TDX corpus (shared/corpus/tdx/gcp-ccel, PROVENANCE.md): quote, CCEL table, event log."""

from __future__ import annotations

from pathlib import Path

import pytest

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "tdx" / "gcp-ccel"
#: TD quote v4: the body starts at 48, RTMR0 at 48 + 328 (evidence.md 1.2).
RTMR0_OFFSET = 48 + 328
RTMR_SIZE = 48


def corpus_file(name: str) -> bytes:
    path = CORPUS / name
    if not path.exists():
        pytest.fail(f"corpus file {path} is missing: the shared corpus must sit beside the checkout (../shared/corpus)")
    return path.read_bytes()


@pytest.fixture(scope="session")
def gcp_log() -> bytes:
    return corpus_file("ccel_data.bin")


@pytest.fixture(scope="session")
def gcp_table() -> bytes:
    return corpus_file("ccel_table.bin")


@pytest.fixture(scope="session")
def gcp_rtmrs() -> list[bytes]:
    quote = corpus_file("quote.bin")
    assert quote[:2] == b"\x04\x00", "the gcp-ccel quote is version 4"
    return [quote[RTMR0_OFFSET + RTMR_SIZE * i : RTMR0_OFFSET + RTMR_SIZE * (i + 1)] for i in range(4)]
