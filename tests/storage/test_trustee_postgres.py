"""End to end on a real PostgreSQL: `trustee run --storage postgresql://...` and `trustee migrate`.

The sample flow (set the resource policy and a resource through the admin
API, attest, fetch) against RVPS, AS and KBS processes that all keep their
state in one PostgreSQL database, and a move of a populated embedded data
directory into PostgreSQL and back without re-provisioning.
"""

from __future__ import annotations

import base64
import tomllib
from pathlib import Path

import psycopg
import pytest
import redis
import tomli_w

from tests.procs import Proc, free_port, script
from tests.storage.servers import PostgresServer, RedisServer
from tests.tools.stack import TrusteeRun, run_tool

SECRET = b"postgres-held secret \x00\xff"

pytestmark = pytest.mark.e2e


def admin(stack: TrusteeRun, *args: str) -> None:
    result = run_tool("kbs-client", "--url", stack.url, "config", "--admin-token-file", str(stack.admin_token), *args)
    assert result.returncode == 0, result.stderr


def fetch(stack: TrusteeRun, path: str) -> bytes:
    result = run_tool("kbs-client", "--url", stack.url, "get-resource", "--path", path)
    assert result.returncode == 0, result.stderr
    return base64.b64decode(result.stdout.strip(), validate=True)


def provision(stack: TrusteeRun, tmp_path: Path, path: str, data: bytes) -> None:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(data)
    admin(stack, "set-resource-policy", "--allow-all")
    admin(stack, "set-resource", "--path", path, "--resource-file", str(secret))
    admin(stack, "set-sample-reference-value", "svn", "1")


def rows(url: str, table: str) -> dict[str, bytes]:
    with psycopg.connect(url) as conn:
        return {str(k): bytes(v) for k, v in conn.execute(f'SELECT key, value FROM "{table}"').fetchall()}  # noqa: S608 - test-chosen name


def test_trustee_run_keeps_everything_in_postgres(postgres_server: PostgresServer, tmp_path: Path) -> None:
    url = postgres_server.new_database()
    stack = TrusteeRun(tmp_path / "data", tmp_path / "run.log", extra=("--storage", url))
    try:
        assert f"storage PostgreSQL {url}" in stack.banner
        provision(stack, tmp_path, "default/pg/secret", SECRET)
        assert fetch(stack, "default/pg/secret") == SECRET
    finally:
        stack.stop()
    for name in ("kbs", "as", "rvps"):
        config = tomllib.loads((stack.data_dir / name / "config.toml").read_text())
        assert config["storage_backend"] == {"storage_type": "Postgres", "backends": {"postgres": {"url": url}}}
        assert not (stack.data_dir / name / "storage.sqlite3").exists()
        assert (stack.data_dir / name / "config.toml").stat().st_mode & 0o077 == 0
    assert rows(url, "repository") == {"default/pg/secret": SECRET}
    assert "resource-policy.rego" in rows(url, "kbs")
    assert "default_cpu.rego" in rows(url, "attestation_service_policy")
    assert "svn" in rows(url, "reference_value")
    assert list((stack.data_dir / "kbs" / "repository").iterdir()) == []


def test_embedded_data_moves_to_postgres_and_back(postgres_server: PostgresServer, tmp_path: Path) -> None:
    data = tmp_path / "embedded"
    stack = TrusteeRun(data, tmp_path / "embedded.log")
    try:
        provision(stack, tmp_path, "default/moved/secret", SECRET)
    finally:
        stack.stop()
    url = postgres_server.new_database()
    result = run_tool("trustee", "migrate", "--from", str(data), "--to", url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK: copied ") and "  repository: 1" in result.stdout
    assert rows(url, "repository") == {"default/moved/secret": SECRET}

    stack = TrusteeRun(data, tmp_path / "pg.log", extra=("--storage", url))
    try:
        assert fetch(stack, "default/moved/secret") == SECRET
        provision(stack, tmp_path, "default/added/in-postgres", b"new")
    finally:
        stack.stop()

    back = tmp_path / "back"
    result = run_tool("trustee", "migrate", "--from", url, "--to", str(back))
    assert result.returncode == 0, result.stderr
    assert (back / "kbs" / "repository" / "default" / "added" / "in-postgres").read_bytes() == b"new"
    # A fresh data directory: new admin and token-signing keys, the stored state from PostgreSQL.
    stack = TrusteeRun(back, tmp_path / "back.log")
    try:
        assert fetch(stack, "default/moved/secret") == SECRET
        assert fetch(stack, "default/added/in-postgres") == b"new"
    finally:
        stack.stop()


def test_a_second_kbs_with_redis_sessions_serves_the_same_resources(postgres_server: PostgresServer, redis_server: RedisServer,
                                                                   tmp_path: Path) -> None:
    """A replica KBS on the same database, its RCAR sessions in Redis (`session_storage_type = "Redis"`)."""
    url = postgres_server.new_database()
    redis_server.flush()
    stack = TrusteeRun(tmp_path / "data", tmp_path / "run.log", extra=("--storage", url))
    try:
        provision(stack, tmp_path, "default/shared/secret", SECRET)
        config = tomllib.loads((stack.data_dir / "kbs" / "config.toml").read_text())
        port = free_port()
        config["http_server"]["sockets"] = [f"127.0.0.1:{port}"]
        config["session_storage_type"] = "Redis"
        config["storage_backend"]["backends"]["redis"] = {"url": redis_server.url}
        (tmp_path / "replica.toml").write_text(tomli_w.dumps(config))
        replica = Proc([script("kbs"), "--config-file", str(tmp_path / "replica.toml")], tmp_path / "replica.log", port=port)
        try:
            result = run_tool("kbs-client", "--url", f"http://127.0.0.1:{port}", "get-resource", "--path", "default/shared/secret")
            assert result.returncode == 0, result.stderr + replica.output()
            assert base64.b64decode(result.stdout.strip()) == SECRET
            with redis.Redis.from_url(redis_server.url) as client:
                assert client.keys("kbs_protocol_session:*")
        finally:
            replica.stop()
    finally:
        stack.stop()
    assert rows(url, "kbs_protocol_session") == {}
