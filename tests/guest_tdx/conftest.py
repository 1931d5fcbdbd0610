"""A fake configfs-tsm report directory served by a thread, as the kernel's would be.

configfs semantics the fake reproduces: `mkdir` of an entry makes its
attribute files at once (`provider`, `generation`, `outblob`), `rmdir`
removes the entry with them. Those two calls are the only ones patched
(`os.mkdir`, `os.rmdir`, for paths under the fake root only). A thread
waits for each entry's 64-byte `inblob`, bumps `generation` and answers
through `outblob`, a FIFO, so the attester's read blocks until the quote
is there, as with the real driver.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "tdx" / "gcp-ccel"
REAL_MKDIR = os.mkdir
REAL_RMDIR = os.rmdir


def corpus_file(name: str) -> bytes:
    path = CORPUS / name
    if not path.exists():
        pytest.fail(f"corpus file {path} is missing: the shared corpus must sit beside the checkout (../shared/corpus)")
    return path.read_bytes()


class FakeConfigfs:
    def __init__(self, root: Path, quote: bytes) -> None:
        self.root = root
        self.quote = quote
        self.provider = "tdx_guest\n"
        #: generation the fake reports after the inblob write (1 = only our write).
        self.generation_after_write = 1
        self.created: list[Path] = []
        self.removed: list[Path] = []
        self.inblobs: list[bytes] = []
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
                (entry / "generation").write_text(f"{self.generation_after_write}\n")
                with open(entry / "outblob", "wb") as fifo:
                    fifo.write(self.quote)
            time.sleep(0.001)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


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
    monkeypatch.setattr(os, "mkdir", fake.mkdir)
    monkeypatch.setattr(os, "rmdir", fake.rmdir)
    fake.start()
    yield fake
    fake.stop()
