"""Session-wide real PostgreSQL and Redis servers, and one fresh database or keyspace per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.storage.servers import PostgresServer, RedisServer, start_postgres, start_redis


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = start_postgres()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis") / "redis.log")
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a new, empty database on the shared server."""
    return postgres_server.new_database()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The shared Redis server, emptied first."""
    redis_server.flush()
    return redis_server.url
