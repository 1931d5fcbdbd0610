"""Decompress image layers and apply them to a rootfs directory, refusing anything unsafe.

`decompress_layer` turns a layer blob (plain tar, gzip or zstd, the zstd
window bounded by ZSTD_MAX_WINDOW) into a tar file, bounded in size, and
returns the sha256 of that tar: the layer's `diff_id`, which the caller
checks against the image config before the tar is applied.

`apply_layer` writes each tar member itself; `tarfile.extractall` is never
used. Every path is walked from an open descriptor of the rootfs one
component at a time (`openat` with `O_NOFOLLOW|O_DIRECTORY`), so no symlink
is ever followed, whether the image planted it or not; a component that is a
symlink is refused. Files are created with `O_CREAT|O_EXCL|O_NOFOLLOW` after
the old entry is removed. Refused with UnsafeImageError: absolute names, `..`
components, paths through a symlink, hard links to anything but a regular
file already in the tree, device nodes, FIFOs, unknown entry types, and
layers over the entry count or byte cap. The caller removes the partial tree.

OCI whiteouts: `.wh.<name>` removes `<name>` as lower layers left it;
`.wh..wh..opq` empties its directory of lower-layer content and keeps what
the same layer puts there, whatever the order of the entries (the layer's
own paths are remembered while it is applied). Other `.wh..wh.` names (aufs
bookkeeping) are skipped.

Mode bits are applied as the tar says (setuid, setgid and sticky included);
ownership from the tar only when running as root; mtimes for files, links
and directories (directories last, so later entries do not change them).
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import shutil
import stat
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import zstandard

from trustee_common.errors import UnsafeImageError, clip_repr

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
MAX_NAME_CHARS = 4096
MAX_COMPONENT_CHARS = 255
MAX_ID = (1 << 32) - 2
CHUNK = 1 << 20
#: The largest zstd window a layer may ask for (128 MiB: zstd's default limit for frames without a declared size).
ZSTD_MAX_WINDOW = 1 << 27
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class LayerLimits:
    """Bounds on one layer: tar entries, and bytes of regular file content."""

    max_entries: int
    max_bytes: int


def layer_compression(media_type: str) -> str:
    """"tar", "gzip" or "zstd" for an (unencrypted) layer media type; UnsafeImageError for others."""
    base = media_type.removesuffix("+encrypted")
    if base in ("application/vnd.oci.image.layer.v1.tar", "application/vnd.docker.image.rootfs.diff.tar"):
        return "tar"
    if base in ("application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.docker.image.rootfs.diff.tar.gzip"):
        return "gzip"
    if base in ("application/vnd.oci.image.layer.v1.tar+zstd", "application/vnd.docker.image.rootfs.diff.tar.zstd"):
        return "zstd"
    raise UnsafeImageError(f"layer media type {clip_repr(media_type)} is not supported")


def decompress_layer(blob: Path, dest: Path, compression: str, max_bytes: int) -> str:
    """Write the tar inside `blob` to the new file `dest` (at most `max_bytes`); return its sha256 digest."""
    hasher = hashlib.sha256()
    written = 0
    try:
        with open(blob, "rb") as raw, _reader(raw, compression) as source, open(dest, "xb") as out:
            while chunk := source.read(CHUNK):
                written += len(chunk)
                if written > max_bytes:
                    raise UnsafeImageError(f"a layer decompresses to more than the {max_bytes} byte limit")
                hasher.update(chunk)
                out.write(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        raise UnsafeImageError(f"a layer is not valid {compression} data: {exc}") from exc
    except zstandard.ZstdError as exc:
        raise UnsafeImageError(f"a layer is not valid zstd data: {exc}") from exc
    return "sha256:" + hasher.hexdigest()


@contextmanager
def _reader(raw: IO[bytes], compression: str) -> Iterator[IO[bytes]]:
    if compression == "tar":
        yield raw
    elif compression == "gzip":
        with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
            yield stream  # type: ignore[misc]  # GzipFile is a binary IO
    else:
        with zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW).stream_reader(raw) as stream:
            yield stream


def apply_layer(tar_path: Path, rootfs: Path, limits: LayerLimits) -> None:
    """Apply the tar at `tar_path` on top of `rootfs` (see the module docstring)."""
    root_fd = os.open(rootfs, _DIR_FLAGS)
    try:
        with open(tar_path, "rb") as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
            layer = _Layer(root_fd, limits, tar)
            for member in tar:
                layer.apply(member)
            layer.finish()
    except tarfile.TarError as exc:
        raise UnsafeImageError(f"a layer is not a valid tar archive: {exc}") from exc
    finally:
        os.close(root_fd)


def remove_tree(path: Path) -> None:
    """Remove `path` and everything under it without following symlinks; nothing if it is absent."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def split_name(name: str, what: str = "layer entry") -> list[str]:
    """The components of a tar member name, or UnsafeImageError for absolute names and `..`."""
    if "\x00" in name or len(name) > MAX_NAME_CHARS:
        raise UnsafeImageError(f"{what} {clip_repr(name)}: name too long or with a NUL byte")
    if name.startswith("/"):
        raise UnsafeImageError(f"{what} {clip_repr(name)} has an absolute path")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafeImageError(f"{what} {clip_repr(name)} has a '..' component")
    if any(len(part) > MAX_COMPONENT_CHARS for part in parts):
        raise UnsafeImageError(f"{what} {clip_repr(name)} has a component over {MAX_COMPONENT_CHARS} characters")
    return parts


class _Layer:
    """The state of applying one layer: its own paths (for opaque whiteouts) and its directories' attributes."""

    def __init__(self, root_fd: int, limits: LayerLimits, tar: tarfile.TarFile) -> None:
        self.root_fd = root_fd
        self.limits = limits
        self.tar = tar
        self.as_root = os.geteuid() == 0
        self.touched: set[tuple[str, ...]] = set()
        self.dirs: list[tuple[tuple[str, ...], tarfile.TarInfo]] = []
        self.entries = 0
        self.bytes = 0

    def apply(self, member: tarfile.TarInfo) -> None:
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise UnsafeImageError(f"a layer has more than {self.limits.max_entries} entries")
        parts = split_name(member.name)
        try:
            self._apply(member, parts)
        except OSError as exc:
            raise UnsafeImageError(f"layer entry {clip_repr(member.name)} cannot be unpacked: "
                                   f"{exc.strerror or exc}") from exc

    def _apply(self, member: tarfile.TarInfo, parts: list[str]) -> None:
        if not parts:
            if not member.isdir():
                raise UnsafeImageError("a layer has a non-directory entry for the root")
            self.dirs.append(((), member))
            return
        base = parts[-1]
        if base == OPAQUE:
            self._opaque(parts[:-1])
        elif base.startswith(WHITEOUT + WHITEOUT):
            return
        elif base.startswith(WHITEOUT):
            self._whiteout([*parts[:-1], base[len(WHITEOUT):]], member.name)
        else:
            self._entry(member, parts)

    # --- entries ------------------------------------------------------------

    def _entry(self, member: tarfile.TarInfo, parts: list[str]) -> None:
        if member.ischr() or member.isblk() or member.isfifo():
            raise UnsafeImageError(f"layer entry {clip_repr(member.name)} is a device node or FIFO")
        if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
            raise UnsafeImageError(f"layer entry {clip_repr(member.name)} has unsupported type {member.type!r}")
        self._mark(parts)
        with self._parent(parts, create=True) as parent:
            assert parent is not None
            name = parts[-1]
            if member.isdir():
                self._directory(parent, name, tuple(parts), member)
            elif member.isreg():
                self._file(parent, name, member)
            elif member.issym():
                self._symlink(parent, name, member)
            else:
                self._hardlink(parent, name, parts, member)

    def _directory(self, parent: int, name: str, parts: tuple[str, ...], member: tarfile.TarInfo) -> None:
        existing = _lstat(parent, name)
        if existing is None or not stat.S_ISDIR(existing.st_mode):
            _remove(parent, name, existing)
            os.mkdir(name, 0o700, dir_fd=parent)
        self.dirs.append((parts, member))

    def _file(self, parent: int, name: str, member: tarfile.TarInfo) -> None:
        self.bytes += member.size
        if self.bytes > self.limits.max_bytes:
            raise UnsafeImageError(f"a layer's files hold more than the {self.limits.max_bytes} byte limit")
        _remove(parent, name, _lstat(parent, name))
        source = self.tar.extractfile(member)
        assert source is not None
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=parent)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(source, out, CHUNK)
            out.flush()
            if self.as_root:
                os.fchown(fd, *_owner(member))
            os.fchmod(fd, member.mode & 0o7777)
            os.utime(fd, (member.mtime, member.mtime))

    def _symlink(self, parent: int, name: str, member: tarfile.TarInfo) -> None:
        target = member.linkname
        if not target or "\x00" in target or len(target) > MAX_NAME_CHARS:
            raise UnsafeImageError(f"layer entry {clip_repr(member.name)}: symlink target empty, too long or with a NUL")
        _remove(parent, name, _lstat(parent, name))
        os.symlink(target, name, dir_fd=parent)
        if self.as_root:
            os.chown(name, *_owner(member), dir_fd=parent, follow_symlinks=False)
        os.utime(name, (member.mtime, member.mtime), dir_fd=parent, follow_symlinks=False)

    def _hardlink(self, parent: int, name: str, parts: list[str], member: tarfile.TarInfo) -> None:
        target = split_name(member.linkname, f"hard link {clip_repr(member.name)} to")
        if not target:
            raise UnsafeImageError(f"layer entry {clip_repr(member.name)} is a hard link to the root")
        if target == parts:
            return
        with self._parent(target, create=False) as source:
            st = None if source is None else _lstat(source, target[-1])
            if source is None or st is None or not stat.S_ISREG(st.st_mode):
                raise UnsafeImageError(f"layer entry {clip_repr(member.name)} is a hard link to "
                                       f"{clip_repr(member.linkname)}, which is not a regular file in the image")
            _remove(parent, name, _lstat(parent, name))
            os.link(target[-1], name, src_dir_fd=source, dst_dir_fd=parent, follow_symlinks=False)

    # --- whiteouts ----------------------------------------------------------

    def _whiteout(self, parts: list[str], tar_name: str) -> None:
        if parts[-1] in ("", ".", ".."):
            raise UnsafeImageError(f"layer entry {clip_repr(tar_name)} is a whiteout of no name")
        if tuple(parts) in self.touched:
            return
        with self._parent(parts, create=False) as parent:
            if parent is not None:
                _remove(parent, parts[-1], _lstat(parent, parts[-1]))

    def _opaque(self, directory: list[str]) -> None:
        self._mark(directory)
        with self._parent([*directory, OPAQUE], create=False) as fd:
            if fd is not None:
                self._clear_lower(fd, tuple(directory))

    def _clear_lower(self, fd: int, prefix: tuple[str, ...]) -> None:
        for name in os.listdir(fd):
            path = (*prefix, name)
            st = _lstat(fd, name)
            if path not in self.touched:
                _remove(fd, name, st)
            elif st is not None and stat.S_ISDIR(st.st_mode):
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                try:
                    self._clear_lower(child, path)
                finally:
                    os.close(child)

    # --- helpers ------------------------------------------------------------

    def _mark(self, parts: list[str]) -> None:
        for end in range(1, len(parts) + 1):
            self.touched.add(tuple(parts[:end]))

    @contextmanager
    def _parent(self, parts: list[str], *, create: bool) -> Iterator[int | None]:
        """An open descriptor of the directory holding `parts[-1]` (None if absent and not `create`)."""
        fd = os.dup(self.root_fd)
        try:
            for depth, name in enumerate(parts[:-1]):
                st = _lstat(fd, name)
                if st is None:
                    if not create:
                        yield None
                        return
                    os.mkdir(name, 0o755, dir_fd=fd)
                    os.chmod(name, 0o755, dir_fd=fd)  # noqa: S103 - a parent the tar does not list: 0755 whatever the umask
                elif stat.S_ISLNK(st.st_mode):
                    raise UnsafeImageError(f"layer entry {clip_repr('/'.join(parts))} goes through the symlink "
                                           f"{clip_repr('/'.join(parts[:depth + 1]))}")
                elif not stat.S_ISDIR(st.st_mode):
                    raise UnsafeImageError(f"layer entry {clip_repr('/'.join(parts))}: "
                                           f"{clip_repr('/'.join(parts[:depth + 1]))} is not a directory")
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
            yield fd
        finally:
            os.close(fd)

    def finish(self) -> None:
        """Set the directories' owners, modes and mtimes, the last record of each winning."""
        done: set[tuple[str, ...]] = set()
        for parts, member in reversed(self.dirs):
            if parts in done:
                continue
            done.add(parts)
            fd = self._open_dir(parts)
            if fd is None:
                continue
            try:
                if self.as_root:
                    os.fchown(fd, *_owner(member))
                os.fchmod(fd, member.mode & 0o7777)
                os.utime(fd, (member.mtime, member.mtime))
            finally:
                os.close(fd)

    def _open_dir(self, parts: tuple[str, ...]) -> int | None:
        if not parts:
            return os.dup(self.root_fd)
        try:
            with self._parent(list(parts), create=False) as parent:
                return None if parent is None else os.open(parts[-1], _DIR_FLAGS, dir_fd=parent)
        except (UnsafeImageError, OSError) as exc:  # removed or replaced later in the same layer
            if isinstance(exc, OSError) and exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                raise
            return None


def _lstat(parent: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _remove(parent: int, name: str, st: os.stat_result | None) -> None:
    if st is None:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=parent)
    else:
        os.unlink(name, dir_fd=parent)


def _owner(member: tarfile.TarInfo) -> tuple[int, int]:
    if not (0 <= member.uid <= MAX_ID and 0 <= member.gid <= MAX_ID):
        raise UnsafeImageError(f"layer entry {clip_repr(member.name)} has an out-of-range uid or gid")
    return member.uid, member.gid
