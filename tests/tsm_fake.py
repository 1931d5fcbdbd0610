"""A fake configfs-tsm report directory, shared by the TDX and SNP attester tests.

As the kernel's: `mkdir` of an entry under the fake root makes its
attribute files at once (`provider`, `generation`, an `outblob` FIFO, and
whatever a subclass adds); `rmdir` removes them. Only `os.mkdir` /
`os.rmdir` under the fake root are patched. A thread waits for each
entry's 64-byte `inblob`, records it, bumps `generation` and answers
through `outblob`, so the attester's read blocks until the report is there.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

REAL_MKDIR = os.mkdir
REAL_RMDIR = os.rmdir


class FakeTsmConfigfs:
    def __init__(self, root: Path, outblob: bytes, provider: str) -> None:
        self.root = root
        #: what the fake answers through `outblob` (a TD quote or an SNP report).
        self.outblob = outblob
        self.provider = provider
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

    def populate(self, entry: Path) -> None:
        """Extra attribute files of a new entry (subclasses)."""

    def record(self, entry: Path) -> None:
        """Note what the attester wrote besides `inblob`, before the answer (subclasses)."""

    def mkdir(self, path: Any, mode: int = 0o777, *args: Any, **kwargs: Any) -> None:
        REAL_MKDIR(path, mode, *args, **kwargs)
        if self._ours(path):
            entry = Path(path)
            (entry / "provider").write_text(self.provider)
            (entry / "generation").write_text("0\n")
            self.populate(entry)
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
                self.record(entry)
                (entry / "generation").write_text(f"{self.generation_after_write}\n")
                with open(entry / "outblob", "wb") as fifo:
                    fifo.write(self.outblob)
            time.sleep(0.001)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Patch `os.mkdir`/`os.rmdir` and start answering (call `stop` afterwards)."""
        monkeypatch.setattr(os, "mkdir", self.mkdir)
        monkeypatch.setattr(os, "rmdir", self.rmdir)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
