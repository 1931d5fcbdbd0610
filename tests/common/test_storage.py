"""SQLite open errors and the resource directory (the KeyValueStore contract is tests/storage/test_kv_contract.py)."""

from pathlib import Path

import pytest

from trustee_common.errors import MalformedRequestError, StorageError
from trustee_common.storage.directory import DirectoryResourceStore
from trustee_common.storage.sqlite import SqliteStore


async def test_sqlite_unopenable_path_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match="cannot open"):
        SqliteStore(tmp_path / "file" / "kv.sqlite3")


async def test_directory_store_serves_dropped_files_and_writes_atomically(tmp_path: Path) -> None:
    repo = DirectoryResourceStore(tmp_path)
    (tmp_path / "default" / "key").mkdir(parents=True)
    (tmp_path / "default" / "key" / "dropped").write_bytes(b"by hand")
    assert await repo.read("default/key/dropped") == b"by hand"
    await repo.write("default/key/new", b"v1")
    await repo.write("default/key/new", b"v2")
    assert await repo.read("default/key/new") == b"v2"
    assert not any(p.name.startswith(".tmp-") for p in (tmp_path / "default" / "key").iterdir())
    assert await repo.list() == ["default/key/dropped", "default/key/new"]
    assert await repo.delete("default/key/new")
    assert await repo.read("default/key/new") is None


@pytest.mark.parametrize("path", ["a/b", "a/b/c/d", "../b/c", "a/.b/c", "a//c", "a/b/c d"])
async def test_directory_store_refuses_bad_paths(tmp_path: Path, path: str) -> None:
    with pytest.raises(MalformedRequestError):
        await DirectoryResourceStore(tmp_path).read(path)


async def test_directory_store_reads_small_files_inline_and_large_ones_in_a_thread_alike(tmp_path: Path) -> None:
    import os

    from trustee_common.storage.directory import INLINE_READ_BYTES

    repo = DirectoryResourceStore(tmp_path)
    folder = tmp_path / "default" / "key"
    folder.mkdir(parents=True)
    for name, size in (("empty", 0), ("edge", INLINE_READ_BYTES), ("large", INLINE_READ_BYTES + 1), ("big", 5 << 20)):
        content = os.urandom(size)
        (folder / name).write_bytes(content)
        assert await repo.read(f"default/key/{name}") == content, name
    (folder / "dir").mkdir()
    (folder / "link").symlink_to(folder / "edge")
    (folder / "dangling").symlink_to(folder / "absent")
    (folder / "loop").symlink_to(folder / "loop")
    os.mkfifo(folder / "fifo")  # opening it for reading must not wait for a writer
    assert await repo.read("default/key/link") == (folder / "edge").read_bytes()
    for name in ("dir", "dangling", "loop", "fifo", "absent"):
        assert await repo.read(f"default/key/{name}") is None, name
    (tmp_path / "default" / "plain").write_bytes(b"x")
    assert await repo.read("default/plain/below") is None  # a file where a directory should be


def _size(path: Path) -> int:
    return len(path.read_bytes())


async def test_a_file_larger_than_its_stat_size_is_read_whole(tmp_path: Path) -> None:
    """/proc files report size 0: the inline read stops past its limit and the thread reads all of it."""
    from trustee_common.storage.directory import INLINE_READ_BYTES

    smaps = Path("/proc/self/smaps")
    if _size(smaps) <= 2 * INLINE_READ_BYTES:
        pytest.skip("this process's smaps is too small to exceed the inline limit")
    (tmp_path / "default" / "key").mkdir(parents=True)
    (tmp_path / "default" / "key" / "proc").symlink_to(smaps)
    content = await DirectoryResourceStore(tmp_path).read("default/key/proc")
    assert content is not None and len(content) > INLINE_READ_BYTES + 1 and content.endswith(b"\n")
