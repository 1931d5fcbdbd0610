"""A fake configfs-tsm report directory for the snp attester (provider `sev_guest`).

As the kernel's: `mkdir` of an entry makes `provider`, `generation`,
`privlevel`, `auxblob` and `outblob` at once; `rmdir` removes them. Only
`os.mkdir` / `os.rmdir` under the fake root are patched. A thread waits
for each entry's 64-byte `inblob`, records the `privlevel` written before
it, bumps `generation` and answers through `outblob`, a FIFO, so the
attester's read blocks until the report is there.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SNP_CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "snp"
REAL_MKDIR = os.mkdir
REAL_RMDIR = os.rmdir


def corpus_file(relative: str) -> bytes:
    path = SNP_CORPUS / relative
    if not path.exists():
        pytest.fail(f"corpus file {path} is missing: the shared corpus must sit beside the checkout (../shared/corpus)")
    return path.read_bytes()


class FakeSnpConfigfs:
    def __init__(self, root: Path, report: bytes) -> None:
        self.root = root
        self.report = report
        self.provider = "sev_guest\n"
        #: certificate table served as `auxblob`; None: the file does not exist.
        self.auxblob: bytes | None = None
        #: False: the entry has no `privlevel` file (older kernels).
        self.has_privlevel = True
        self.generation_after_write = 1
        self.created: list[Path] = []
        self.removed: list[Path] = []
        self.inblobs: list[bytes] = []
        self.privlevels: list[str | None] = []
        self._served: set[Path] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _ours(self, path: Any) -> bool:
        return Path(path).parent == self.root

    def mkdir(self, path: Any, mode: int = 0o777, *args: Any, **kwargs: Any) -> None:
        REAL_MKDIR(path, mode, *args, **kwargs)
        if self._ours(path):
            entry = Path(path)
            (entry / "provider").write_text(self.provider)
            (entry / "generation").write_text("0\n")
            if self.has_privlevel:
                (entry / "privlevel").write_text("")
            if self.auxblob is not None:
                (entry / "auxblob").write_bytes(self.auxblob)
            os.mkfifo(entry / "outblob")
            self.created.append(entry)

    def rmdir(self, path: Any, *args: Any, **kwargs: Any) -> None:
        if self._ours(path):
            for attribute in Path(path).iterdir():
                attribute.unlink()
            REAL_RMDIR(path, *args, **kwargs)
            self.removed.append(Path(path))
        else:
            REAL_RMDIR(path, *args, **kwargs)

    def _serve(self) -> None:
        while not self._stop.is_set():
            for entry in list(self.created):
                inblob = entry / "inblob"
                if entry in self._served or not inblob.exists() or inblob.stat().st_size < 64:
                    continue
                self._served.add(entry)
                self.inblobs.append(inblob.read_bytes())
                privlevel = entry / "privlevel"
                self.privlevels.append(privlevel.read_text() if privlevel.exists() else None)
                (entry / "generation").write_text(f"{self.generation_after_write}\n")
                with open(entry / "outblob", "wb") as fifo:
                    fifo.write(self.report)
            time.sleep(0.001)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@pytest.fixture
def milan_report() -> bytes:
    return corpus_file("virtee-milan/report.bin")


@pytest.fixture
def configfs(tmp_path: Path, milan_report: bytes, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSnpConfigfs]:
    root = tmp_path / "tsm" / "report"
    root.mkdir(parents=True)
    fake = FakeSnpConfigfs(root, milan_report)
    monkeypatch.setattr(os, "mkdir", fake.mkdir)
    monkeypatch.setattr(os, "rmdir", fake.rmdir)
    fake.start()
    yield fake
    fake.stop()
