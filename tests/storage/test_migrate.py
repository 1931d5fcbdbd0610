"""`trustee migrate`: SQLite file and resource tree to PostgreSQL and back, expiry kept; bad arguments."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from trustee_cli.migrate import migrate

from tests.tools.stack import run_tool
from trustee_common.storage.postgres import PostgresStore
from trustee_common.storage.sqlite import SqliteStore


async def test_sqlite_file_and_resources_round_trip_through_postgres(postgres_url: str, tmp_path: Path) -> None:
    source = SqliteStore(tmp_path / "src.sqlite3")
    expires = time.time() + 600
    await source.put("kbs", "resource-policy.rego", b"package policy")
    await source.put("kbs_protocol_session", "live", b"s", expires_at=expires)
    await source.put("kbs_protocol_session", "dead", b"s", expires_at=time.time() - 1)
    await source.put("intel-dcap-collateral", "tcb/00906ED50000", b"{}")
    await source.close()
    (tmp_path / "res" / "default" / "key").mkdir(parents=True)
    (tmp_path / "res" / "default" / "key" / "one").write_bytes(b"\x00one")

    summary = await migrate(str(tmp_path / "src.sqlite3"), postgres_url, resources=tmp_path / "res")
    assert summary.splitlines()[0].startswith("OK: copied 4 entries from ")
    database = PostgresStore(postgres_url)
    try:
        assert await database.get("repository", "default/key/one") == b"\x00one"
        assert await database.list_keys("kbs_protocol_session") == ["live"]
        [session] = await database.entries("kbs_protocol_session")
        assert session.expires_at == pytest.approx(expires)
        assert await database.get("intel-dcap-collateral", "tcb/00906ED50000") == b"{}"
    finally:
        await database.close()

    await migrate(postgres_url, str(tmp_path / "back.sqlite3"), resources=tmp_path / "res-back")
    back = SqliteStore(tmp_path / "back.sqlite3")
    try:
        assert await back.get("kbs", "resource-policy.rego") == b"package policy"
        assert await back.list_keys("repository") == []
    finally:
        await back.close()
    assert (tmp_path / "res-back" / "default" / "key" / "one").read_bytes() == b"\x00one"


async def test_into_a_data_directory_each_service_gets_its_namespaces(postgres_url: str, tmp_path: Path) -> None:
    database = PostgresStore(postgres_url)
    await database.put("reference_value", "svn", b"1")
    await database.put("attestation_service_policy", "default_cpu.rego", b"p")
    await database.put("kbs", "resource-policy.rego", b"r")
    await database.close()
    await migrate(postgres_url, str(tmp_path / "data"))
    for service, namespace, key in (("rvps", "reference_value", "svn"), ("as", "attestation_service_policy", "default_cpu.rego"),
                                    ("kbs", "kbs", "resource-policy.rego")):
        store = SqliteStore(tmp_path / "data" / service / "storage.sqlite3")
        assert await store.namespaces() == [namespace]
        assert await store.get(namespace, key) is not None
        await store.close()


@pytest.mark.parametrize(("args", "message"), [
    (("--from", "{tmp}/missing.sqlite3", "--to", "{tmp}/x.sqlite3"), "no such SQLite file"),
    (("--from", "{tmp}/nothing-here", "--to", "{tmp}/x.sqlite3"), "neither a postgresql:// URL, a SQLite file nor a data directory"),
    (("--from", "{tmp}", "--to", "{tmp}/x.sqlite3"), "not a trustee data directory"),
    (("--from", "{tmp}/a.sqlite3", "--to", "{tmp}/a.sqlite3"), "--from and --to are the same"),
    (("--from", "{tmp}", "--to", "postgresql://u:pw@[::1/db"), "--to 'postgresql://u:***@[::1/db' is not a valid PostgreSQL URL"),
    (("--from", "postgresql://127.0.0.1:1/db", "--to", "{tmp}/x.sqlite3"), "cannot connect to PostgreSQL"),
])
def test_bad_arguments_are_reported(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    result = run_tool("trustee", "migrate", *(a.format(tmp=tmp_path) for a in args))
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert "pw@" not in result.stderr
