"""Upstream's `LocalFs` and `LocalJson` storage types: SQLite in that directory, filled once from upstream's files.

Directories are written here in upstream Trustee's physical layouts
(trustee-server.md 4.5): LocalFs `<dir>/<namespace>/<key, '/' written as
\\x2F>`, LocalJson `<dir>/<namespace>` = {key: base64url(value), padded}.
The stores, and the real `kbs` and `rvps` processes, must serve that data
and leave upstream's files exactly as they were.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import grpc
import pytest

from rvps.core.record import storage_key
from tests.kbs.helpers import ALLOW_ALL, ear_claims, kbs_toml, load_signing, make_material, mint_token, run_kbs_expect_exit, start_kbs
from tests.procs import Proc, free_port, script
from trustee_common.b64 import url_decode
from trustee_common.config import ConfigTable
from trustee_common.errors import ConfigError, StorageError
from trustee_common.jose import TeeKeyPair
from trustee_common.storage.factory import StorageConfig, open_kv_store, open_session_store
from trustee_common.storage.upstream_local import MAX_IMPORT_VALUE_BYTES, reference_value_key
from trustee_pb import reference_pb2 as pb
from trustee_pb import reference_pb2_grpc

SECRET = b"upstream secret \x00\xff"
URI_NAME = "rvps:///github.com/confidential-containers/tdx/mr_td:v0.18.0"
POLICY = "package policy\n\ndefault allow = true\n"


def record(name: str, value: object, expiration: str = "2999-01-01T00:00:00.123456789Z") -> bytes:
    """An upstream RVPS record (trustee-server.md 7.4)."""
    return json.dumps({"version": "0.1.0", "name": name, "expiration": expiration, "value": value}).encode()


UPSTREAM: dict[str, dict[str, bytes]] = {
    "kbs": {"resource-policy.rego": ALLOW_ALL.encode()},
    "repository": {"default/key/1": SECRET, "other/type/tag": b"two"},
    "attestation_service_policy": {"default_cpu.rego": POLICY.encode()},
    "reference_value": {"svn": record("svn", ["1"]), URI_NAME: record(URI_NAME, ["abc"])},
    "kbs_protocol_session": {"e3b0c442": b'{"nonce":"x"}'},
}


def write_local_fs(directory: Path, data: dict[str, dict[str, bytes]]) -> None:
    for namespace, entries in data.items():
        (directory / namespace).mkdir(parents=True, exist_ok=True)
        for key, value in entries.items():
            if namespace == "reference_value" and ":" in key:
                continue  # upstream's LocalFs refuses such keys; LocalJson keeps them
            (directory / namespace / key.replace("/", "\\x2F")).write_bytes(value)


def write_local_json(directory: Path, data: dict[str, dict[str, bytes]]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for namespace, entries in data.items():
        items = {key: base64.urlsafe_b64encode(value).decode() for key, value in entries.items()}
        (directory / namespace).write_text(json.dumps(items))


WRITERS = {"LocalFs": write_local_fs, "LocalJson": write_local_json}
DIR_KEYS = {"LocalFs": ("local_fs", "dir_path"), "LocalJson": ("local_json", "file_dir_path")}


def snapshot(directory: Path) -> dict[str, tuple[bytes, int, int]]:
    """Upstream's files: content, mtime and mode (our own trustee*.sqlite3* files excluded)."""
    found = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file() and not path.name.startswith("trustee"):
            info = path.stat()
            found[str(path.relative_to(directory))] = (path.read_bytes(), info.st_mtime_ns, info.st_mode)
    return found


def config_for(layout: str, directory: Path, spelling: str | None = None) -> StorageConfig:
    table, key = DIR_KEYS[layout]
    data = {"storage_type": spelling or layout, "backends": {table: {key: str(directory)}}}
    return StorageConfig.from_table(ConfigTable(data, "storage_backend"), Path("/unused.sqlite3"))


def storage_toml(layout: str, directory: Path) -> str:
    table, key = DIR_KEYS[layout]
    return f'[storage_backend]\nstorage_type = "{layout}"\n[storage_backend.backends.{table}]\n{key} = "{directory}"\n'


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(("spelling", "layout"), [("LocalFs", "LocalFs"), ("local_fs", "LocalFs"), ("LocalJson", "LocalJson"),
                                                  ("local_json", "LocalJson"), ("localjson", "LocalJson")])
def test_upstream_local_types_are_sqlite_in_their_directory(tmp_path: Path, spelling: str, layout: str) -> None:
    config = config_for(layout, tmp_path / "d", spelling)
    assert (config.storage_type, config.layout, config.database_path) == ("Sqlite", layout, tmp_path / "d" / "trustee.sqlite3")
    assert config.describe() == f"{layout} {tmp_path / 'd'} (Sqlite {tmp_path / 'd' / 'trustee.sqlite3'})"


def test_absent_directories_take_upstreams_defaults() -> None:
    fs = StorageConfig.from_table(ConfigTable({"storage_type": "LocalFs"}, "storage_backend"), Path("/x"))
    js = StorageConfig.from_table(ConfigTable({"storage_type": "LocalJson", "backends": {"local_json": {}}}, "s"), Path("/x"))
    assert fs.database_path == Path("/opt/confidential-containers/storage/local_fs/trustee.sqlite3")
    assert js.database_path == Path("/opt/confidential-containers/storage/local_json/trustee.sqlite3")


def test_type_overrides_keep_the_backends(tmp_path: Path) -> None:
    """Upstream's `rvps_config.storage_type` / `[attestation_service] storage_type`: another type, same backends."""
    base = StorageConfig.from_table(ConfigTable({"backends": {"local_json": {"file_dir_path": str(tmp_path)}}}, "s"), Path("/db"))
    assert (base.storage_type, base.database_path) == ("Sqlite", Path("/db"))
    override = base.with_type("local_json", "rvps_config.storage_type")
    assert (override.layout, override.database_path) == ("LocalJson", tmp_path / "trustee.sqlite3")
    assert override.with_type("Sqlite", "x").database_path == Path("/db")
    with pytest.raises(ConfigError, match=r"rvps_config.storage_type 'Vault' is not one of Sqlite, Memory, Postgres, Redis, "
                                          r"LocalFs, LocalJson"):
        base.with_type("Vault", "rvps_config.storage_type")
    with pytest.raises(ConfigError, match=r"rvps_config\.storage_type is Postgres but storage_backend\.backends\.postgres has no url"):
        base.with_type("Postgres", "rvps_config.storage_type")


@pytest.mark.parametrize("table", ["local_fs", "local_json"])
def test_unknown_keys_in_the_directory_tables_are_refused(table: str) -> None:
    with pytest.raises(ConfigError, match=f"unknown key\\(s\\) in storage.backends.{table}: path"):
        StorageConfig.from_table(ConfigTable({"backends": {table: {"path": "/x"}}}, "storage"), Path("/x"), where="storage")


def test_messages_name_the_table_the_caller_gave() -> None:
    """Upstream's RVPS calls the table `storage`."""
    with pytest.raises(ConfigError, match=r"^storage\.storage_type is Redis but storage\.backends\.redis has no url"):
        StorageConfig.from_table(ConfigTable({"storage_type": "Redis"}, "storage"), Path("/x"), where="storage")


# --- the import, in process ------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["LocalFs", "LocalJson"])
async def test_upstream_data_is_imported_once_and_left_unchanged(tmp_path: Path, layout: str) -> None:
    directory = tmp_path / "upstream"
    WRITERS[layout](directory, UPSTREAM)
    before = snapshot(directory)
    config = config_for(layout, directory)
    store = open_kv_store(config)
    try:
        assert await store.get("kbs", "resource-policy.rego") == ALLOW_ALL.encode()
        assert await store.list_keys("repository") == ["default/key/1", "other/type/tag"]
        assert await store.get("repository", "default/key/1") == SECRET
        assert await store.get("attestation_service_policy", "default_cpu.rego") == POLICY.encode()
        assert await store.get("reference_value", "svn") == record("svn", ["1"])
        if layout == "LocalJson":  # a name that is no storage key goes where the RVPS looks for it
            assert await store.get("reference_value", storage_key(URI_NAME)) == record(URI_NAME, ["abc"])
        assert await store.list_keys("kbs_protocol_session") == []
        await store.put("repository", "default/key/1", b"changed here")
    finally:
        await store.close()
    assert snapshot(directory) == before
    # From now on the two sides stay apart: our writes do not reach upstream's files, their later changes are not read.
    WRITERS[layout](directory, {"repository": {"default/key/1": b"changed upstream", "new/key/2": b"new"}})
    store = open_kv_store(config)
    try:
        assert await store.get("repository", "default/key/1") == b"changed here"
        assert await store.get("repository", "new/key/2") is None
    finally:
        await store.close()
    assert (directory / "trustee.sqlite3").stat().st_mode & 0o777 == 0o600


async def test_upstream_files_are_not_touched_by_the_import(tmp_path: Path) -> None:
    directory = tmp_path / "upstream"
    write_local_fs(directory, UPSTREAM)
    (directory / "repository" / ".editor.swp").write_bytes(b"not a key")
    before = snapshot(directory)
    store = open_kv_store(config_for("LocalFs", directory))
    await store.close()
    assert snapshot(directory) == before
    assert sorted(p.name for p in directory.iterdir() if p.is_file()) == ["trustee.sqlite3"]


async def test_a_missing_directory_is_created_private(tmp_path: Path) -> None:
    directory = tmp_path / "new" / "local_fs"
    config = config_for("LocalFs", directory)
    store = open_kv_store(config)
    sessions = open_session_store(config)
    try:
        await store.put("kbs", "k", b"v")
        assert await sessions.put("kbs_protocol_session", "s", b"x", expires_at=time.time() + 60)
    finally:
        await sessions.close()
        await store.close()
    assert directory.stat().st_mode & 0o777 == 0o700
    assert (directory / "trustee-sessions.sqlite3").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(("files", "message"), [
    ({"kbs": "[1, 2]"}, "not a JSON object of base64url strings"),
    ({"kbs": "{"}, "not JSON text"),
    ({"kbs": '{"k": "not base64!"}'}, "the value of 'k' is not base64url with padding"),
    ({"kbs": '{"k": "YWJj"}', "repository": '{"k": "YQ"}'}, "the value of 'k' is not base64url with padding"),
])
async def test_a_corrupt_local_json_file_is_refused_and_nothing_imported(tmp_path: Path, files: dict[str, str], message: str) -> None:
    directory = tmp_path / "upstream"
    directory.mkdir()
    for name, text in files.items():
        (directory / name).write_text(text)
    before = snapshot(directory)
    config = config_for("LocalJson", directory)
    with pytest.raises(StorageError) as caught:
        open_kv_store(config)
    assert message in caught.value.detail and "nothing was imported" in caught.value.detail
    assert snapshot(directory) == before
    # The store stayed new: once the file is fixed, the next start imports it.
    (directory / "kbs").write_text('{"k": "YWJj"}')
    (directory / "repository").unlink(missing_ok=True)
    store = open_kv_store(config)
    try:
        assert await store.get("kbs", "k") == b"abc"
    finally:
        await store.close()


def test_an_oversized_upstream_file_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "upstream"
    (directory / "repository").mkdir(parents=True)
    with (directory / "repository" / "big\\x2Fkey\\x2F1").open("wb") as handle:
        handle.truncate(MAX_IMPORT_VALUE_BYTES + 1)  # sparse: no disk space used
    with pytest.raises(StorageError, match=f"larger than {MAX_IMPORT_VALUE_BYTES} bytes"):
        open_kv_store(config_for("LocalFs", directory))


@pytest.mark.parametrize("name", ["svn", "a/b/c", "rvps:///a/b:tag", "/etc/passwd", "../x", "a b é", "_rvps-sha256/x", "x" * 600])
def test_reference_value_keys_are_the_rvps_keys(name: str) -> None:
    assert reference_value_key(name) == storage_key(name)


_OPEN_AND_REPORT = """
import asyncio, logging, sys
from pathlib import Path
from trustee_common.config import ConfigTable
from trustee_common.storage.factory import StorageConfig, open_kv_store
logging.basicConfig(level=logging.INFO, format="%(message)s")
config = StorageConfig.from_table(ConfigTable({"storage_type": "LocalFs", "backends": {"local_fs": {"dir_path": sys.argv[1]}}},
                                              "storage_backend"), Path("/unused"))
async def main():
    store = open_kv_store(config)
    print("GOT", (await store.get("repository", "default/key/1")).hex(), flush=True)
    await store.close()
asyncio.run(main())
"""


def test_processes_starting_together_import_once(tmp_path: Path) -> None:
    directory = tmp_path / "upstream"
    write_local_fs(directory, UPSTREAM)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [subprocess.Popen([sys.executable, "-c", _OPEN_AND_REPORT, str(directory)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=env) for _ in range(4)]
    outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), outputs
    assert all(f"GOT {SECRET.hex()}" in output for output in outputs), outputs
    assert sum("imported upstream Trustee data" in output for output in outputs) == 1, outputs


# --- real services ---------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["LocalFs", "LocalJson"])
async def test_kbs_serves_an_upstream_directory(tmp_path: Path, layout: str) -> None:
    directory = tmp_path / "upstream"
    WRITERS[layout](directory, UPSTREAM)
    before = snapshot(directory)
    material = make_material(tmp_path / "m")
    port = free_port()
    text = kbs_toml(port, material, tmp_path / "repo", as_port=free_port(), storage=storage_toml(layout, directory))
    text = text[:text.index("[[plugins]]")] + '[[plugins]]\nname = "resource"\nstorage_backend_type = "kvstorage"\n'
    server = start_kbs(tmp_path / "kbs", text, port)
    try:
        key = TeeKeyPair.generate()
        signing_key, chain = load_signing(material)
        token = mint_token(ear_claims("tdx", key.public_jwk()), signing_key, chain=chain)
        async with aiohttp.ClientSession() as http:
            async with http.get(server.api("resource/default/key/1"), headers={"Authorization": f"Bearer {token}"}) as response:
                assert response.status == 200, await response.text()
                assert key.decrypt(await response.json()) == SECRET
            admin = {"Authorization": f"Bearer {material.admin_token()}"}
            async with http.get(server.api("resource-policy"), headers=admin) as response:
                assert url_decode((await response.json())["policy"], "policy").decode() == ALLOW_ALL
    finally:
        assert server.proc.stop() == 0
    log = server.proc.log.read_text()
    assert f"imported upstream Trustee data from {directory}" in log and "kbs 1, reference_value" in log
    assert f"storage: {layout} {directory}" in log
    assert snapshot(directory) == before
    assert (directory / "trustee.sqlite3").exists() and (directory / "trustee-sessions.sqlite3").exists()


def test_kbs_refuses_an_unknown_storage_type(tmp_path: Path) -> None:
    material = make_material(tmp_path / "m")
    storage = '[storage_backend]\nstorage_type = "LocalYaml"\n'
    code, output = run_kbs_expect_exit(tmp_path / "kbs", kbs_toml(free_port(), material, tmp_path / "r", as_port=free_port(),
                                                                  storage=storage))
    assert code == 2, output
    assert output.strip() == ("kbs: configuration error: storage_backend.storage_type 'LocalYaml' is not one of "
                              "Sqlite, Memory, Postgres, Redis, LocalFs, LocalJson")


def test_kbs_refuses_a_corrupt_upstream_file_in_one_line(tmp_path: Path) -> None:
    directory = tmp_path / "upstream"
    directory.mkdir()
    (directory / "repository").write_text('{"default/key/1": 5}')
    material = make_material(tmp_path / "m")
    text = kbs_toml(free_port(), material, tmp_path / "r", as_port=free_port(), storage=storage_toml("LocalJson", directory))
    code, output = run_kbs_expect_exit(tmp_path / "kbs", text)
    assert code == 1, output
    assert f"kbs: error: StorageError: storage LocalJson: cannot import upstream data from {directory / 'repository'}" in output
    assert "Traceback" not in output


async def test_rvps_serves_upstream_local_json_reference_values(tmp_path: Path) -> None:
    directory = tmp_path / "upstream"
    write_local_json(directory, UPSTREAM)
    before = snapshot(directory)
    config = tmp_path / "rvps.toml"
    config.write_text(storage_toml("LocalJson", directory))
    port = free_port()
    proc = Proc([script("rvps"), "-c", str(config), "-a", f"127.0.0.1:{port}"], tmp_path / "rvps.log", port=port)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = reference_pb2_grpc.ReferenceValueProviderServiceStub(channel)
            for name, value in (("svn", ["1"]), (URI_NAME, ["abc"])):
                reply = await stub.QueryReferenceValue(pb.ReferenceValueQueryRequest(reference_value_id=name))
                assert json.loads(reply.reference_value_results) == value
    finally:
        assert proc.stop() == 0, proc.output()
    assert snapshot(directory) == before


async def test_rvps_and_kbs_sharing_one_local_fs_directory(tmp_path: Path) -> None:
    """Upstream's single-directory setups: every service's data lands in the one SQLite file, imported by the first."""
    directory = tmp_path / "upstream"
    write_local_fs(directory, UPSTREAM)
    config = tmp_path / "rvps.toml"
    config.write_text(storage_toml("LocalFs", directory))
    port = free_port()
    proc = Proc([script("rvps"), "-c", str(config), "-a", f"127.0.0.1:{port}"], tmp_path / "rvps.log", port=port)
    try:
        store = open_kv_store(config_for("LocalFs", directory))  # a second service on the same directory
        try:
            assert await store.get("repository", "default/key/1") == SECRET
        finally:
            await store.close()
    finally:
        assert proc.stop() == 0, proc.output()
    assert "imported upstream Trustee data" in proc.log.read_text()
