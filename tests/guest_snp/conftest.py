"""The snp attester's fake configfs-tsm (tests/tsm_fake.py, provider `sev_guest`, plus `privlevel` and `auxblob`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tsm_fake import FakeTsmConfigfs

SNP_CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "snp"


def corpus_file(relative: str) -> bytes:
    path = SNP_CORPUS / relative
    if not path.exists():
        pytest.fail(f"corpus file {path} is missing: the shared corpus must sit beside the checkout (../shared/corpus)")
    return path.read_bytes()


class FakeSnpConfigfs(FakeTsmConfigfs):
    """Adds `privlevel` (recorded before the answer) and an optional `auxblob` certificate table."""

    def __init__(self, root: Path, report: bytes) -> None:
        super().__init__(root, report, "sev_guest\n")
        #: certificate table served as `auxblob`; None: the file does not exist.
        self.auxblob: bytes | None = None
        #: False: the entry has no `privlevel` file (older kernels).
        self.has_privlevel = True
        self.privlevels: list[str | None] = []

    def populate(self, entry: Path) -> None:
        if self.has_privlevel:
            (entry / "privlevel").write_text("")
        if self.auxblob is not None:
            (entry / "auxblob").write_bytes(self.auxblob)

    def record(self, entry: Path) -> None:
        privlevel = entry / "privlevel"
        self.privlevels.append(privlevel.read_text() if privlevel.exists() else None)


@pytest.fixture
def milan_report() -> bytes:
    return corpus_file("virtee-milan/report.bin")


@pytest.fixture
def configfs(tmp_path: Path, milan_report: bytes, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSnpConfigfs]:
    root = tmp_path / "tsm" / "report"
    root.mkdir(parents=True)
    fake = FakeSnpConfigfs(root, milan_report)
    fake.install(monkeypatch)
    yield fake
    fake.stop()
