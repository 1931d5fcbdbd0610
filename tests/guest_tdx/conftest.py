"""The TDX attester's fake configfs-tsm (tests/tsm_fake.py, provider `tdx_guest`) and the GCP corpus files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tsm_fake import FakeTsmConfigfs

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "tdx" / "gcp-ccel"


def corpus_file(name: str) -> bytes:
    path = CORPUS / name
    if not path.exists():
        pytest.fail(f"corpus file {path} is missing: the shared corpus must sit beside the checkout (../shared/corpus)")
    return path.read_bytes()


class FakeConfigfs(FakeTsmConfigfs):
    def __init__(self, root: Path, quote: bytes) -> None:
        super().__init__(root, quote, "tdx_guest\n")


@pytest.fixture
def gcp_quote() -> bytes:
    return corpus_file("quote.bin")


@pytest.fixture
def gcp_ccel() -> bytes:
    return corpus_file("ccel_data.bin")


@pytest.fixture
def configfs(tmp_path: Path, gcp_quote: bytes, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeConfigfs]:
    root = tmp_path / "tsm" / "report"
    root.mkdir(parents=True)
    fake = FakeConfigfs(root, gcp_quote)
    fake.install(monkeypatch)
    yield fake
    fake.stop()
