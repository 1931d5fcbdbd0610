"""The private PostgreSQL and Redis servers of tests/storage, shared here (real servers, started once per session)."""

from __future__ import annotations

from tests.storage.conftest import postgres_server, postgres_url, redis_server, redis_url

__all__ = ["postgres_server", "postgres_url", "redis_server", "redis_url"]
