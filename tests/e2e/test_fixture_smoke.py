"""The fixtures themselves: migrations apply once, topics are created once, PostgreSQL settings."""

from __future__ import annotations

import asyncpg
import pytest

from services.common import db, kafka

pytestmark = pytest.mark.timeout(60)


async def test_migrations_and_topics_are_idempotent(fresh_dsn: str, broker) -> None:
    every = sorted(path.stem for path in db.migrations_dir().glob("*.sql"))
    assert every[0] == "0001_init"
    assert await db.migrate(fresh_dsn) == every
    assert await db.migrate(fresh_dsn) == []
    created = await kafka.ensure_topics(broker.bootstrap, 4, 4)
    assert set(created) == {kafka.REQUESTS, kafka.HISTORY, kafka.TASKS, kafka.REPLIES, kafka.DLQ}
    assert await kafka.ensure_topics(broker.bootstrap, 4, 4) == []


async def test_the_embedded_postgresql_is_durable_and_does_not_zero_fill_wal(fresh_dsn: str) -> None:
    conn = await asyncpg.connect(fresh_dsn)
    try:
        settings = {k: await conn.fetchval(f"SHOW {k}") for k in ("fsync", "synchronous_commit", "wal_init_zero")}
    finally:
        await conn.close()
    assert settings == {"fsync": "on", "synchronous_commit": "on", "wal_init_zero": "off"}
