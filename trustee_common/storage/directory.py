"""`ResourceStore` over a directory tree `<dir>/<repo>/<type>/<tag>`.

Files an operator drops or mounts there are served as they are. Writes go
to a temporary file in the same directory, are fsynced and renamed into
place, so a reader never sees a partial resource, even after a crash.
A read-only tree serves reads and refuses writes with a clear error.

A resource of at most `INLINE_READ_BYTES` is read on the event loop, as the
SQLite stores read (a local file in the page cache reads in microseconds,
where a worker-thread hop costs far more); a larger one, and every write,
goes to a worker thread.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import stat
import tempfile
from pathlib import Path

from trustee_common.errors import MalformedRequestError, StorageError, clip_repr

# Upstream resource plugin: each segment ^[a-zA-Z0-9_\-]+[a-zA-Z0-9_\-\.]*$
RESOURCE_SEGMENT = re.compile(r"^[a-zA-Z0-9_\-]+[a-zA-Z0-9_\-.]*$")
#: A segment is a file or directory name: at most 255 bytes on Linux file systems.
MAX_SEGMENT_CHARS = 255
#: Resources up to this size are read on the event loop.
INLINE_READ_BYTES = 64 * 1024


def parse_resource_path(path: str) -> tuple[str, str, str]:
    """Split and validate `repo/type/tag`; raises `MalformedRequestError`."""
    parts = path.split("/")
    if len(parts) != 3:
        raise MalformedRequestError(f"resource path {clip_repr(path)} must be <repository>/<type>/<tag>")
    for part in parts:
        if len(part) > MAX_SEGMENT_CHARS:
            raise MalformedRequestError(f"resource path segment {clip_repr(part)} is longer than {MAX_SEGMENT_CHARS} characters")
        if not RESOURCE_SEGMENT.fullmatch(part):
            raise MalformedRequestError(f"invalid resource path segment {clip_repr(part)}")
    return parts[0], parts[1], parts[2]


#: What `Path.is_file` takes for "not a file" (it answers False for them instead of raising).
_NOT_A_FILE = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EISDIR})


def _read_small(target: Path, path: str) -> tuple[bool, bytes | None]:
    """(True, bytes) for a regular file of at most `INLINE_READ_BYTES`, (True, None) for no regular file
    (absent, a directory, a FIFO), (False, None) for a larger file, to be read in a worker thread."""
    try:
        fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # O_NONBLOCK: opening a FIFO must not block
    except OSError as exc:
        if exc.errno in _NOT_A_FILE:
            return True, None
        raise StorageError(f"cannot read resource {path}: {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return True, None
        if info.st_size > INLINE_READ_BYTES:
            return False, None
        chunks, total = [], 0
        while chunk := os.read(fd, INLINE_READ_BYTES + 1):
            chunks.append(chunk)
            total += len(chunk)
            if total > INLINE_READ_BYTES:  # it grew since fstat: read it whole in a thread
                return False, None
        return True, b"".join(chunks)
    except OSError as exc:
        raise StorageError(f"cannot read resource {path}: {exc.strerror}") from exc
    finally:
        os.close(fd)


class DirectoryResourceStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _file(self, path: str) -> Path:
        return self.root.joinpath(*parse_resource_path(path))

    async def read(self, path: str) -> bytes | None:
        target = self._file(path)
        inline, value = _read_small(target, path)
        if inline:
            return value

        def op() -> bytes | None:
            try:
                return target.read_bytes() if target.is_file() else None
            except OSError as exc:
                raise StorageError(f"cannot read resource {path}: {exc.strerror}") from exc

        return await asyncio.to_thread(op)

    async def write(self, path: str, data: bytes) -> None:
        target = self._file(path)
        await asyncio.to_thread(_atomic_write, target, data)

    async def delete(self, path: str) -> bool:
        target = self._file(path)

        def op() -> bool:
            try:
                target.unlink()
            except FileNotFoundError:
                return False
            except OSError as exc:
                raise StorageError(f"cannot delete resource {path}: {exc.strerror}") from exc
            _fsync_dir(target.parent)
            return True

        return await asyncio.to_thread(op)

    async def list(self) -> list[str]:
        def op() -> list[str]:
            found = []
            for file in self.root.glob("*/*/*"):
                rel = file.relative_to(self.root).as_posix()
                if file.is_file() and all(RESOURCE_SEGMENT.fullmatch(p) for p in rel.split("/")):
                    found.append(rel)
            return sorted(found)

        return await asyncio.to_thread(op)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(target: Path, data: bytes) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(target.parent)
    except OSError as exc:
        raise StorageError(f"cannot write resource {target.relative_to(target.parents[2])}: {exc.strerror}") from exc
