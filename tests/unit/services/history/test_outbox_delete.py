"""The relay's delete of published outbox rows (HistoryStore.delete_outbox) commits without
waiting for the WAL flush, and deletes exactly what it is asked to."""

from __future__ import annotations

import asyncpg
import pytest

from services.common import db
from services.history.store import HistoryStore

pytestmark = pytest.mark.timeout(60)


async def _outbox(conn: asyncpg.Connection, shard_id: int, ids: range) -> None:
    await conn.executemany(
        "INSERT INTO outbox_batches (shard_id, id, topics, keys, payloads, headers) VALUES ($1, $2, $3, $4, $5, $6)",
        [(shard_id, i, ["kadence.history"], [b"k"], [b"v"], [None]) for i in ids])


async def test_the_delete_of_published_rows_does_not_wait_for_the_wal_flush(fresh_dsn: str) -> None:
    await db.migrate(fresh_dsn)
    pool = await db.create_pool(fresh_dsn, min_size=1, max_size=1)
    try:
        store = HistoryStore(pool)
        async with pool.acquire() as conn:
            await _outbox(conn, 0, range(1, 11))
            await _outbox(conn, 1, range(1, 3))
        unflushed = 0
        for up_to in range(2, 11, 2):
            await store.delete_outbox(0, up_to)
            # A synchronous commit returns only once its WAL is flushed; this one may return
            # before (the WAL writer flushes it within its delay, so count, not insist on each).
            unflushed += await pool.fetchval("SELECT pg_current_wal_flush_lsn() < pg_current_wal_insert_lsn()")
        assert unflushed > 0
        rows = await pool.fetch("SELECT shard_id, id FROM outbox_batches ORDER BY shard_id, id")
        assert [tuple(r) for r in rows] == [(1, 1), (1, 2)]  # shard 0's up to 10 gone, shard 1's kept
        assert await pool.fetchval("SHOW synchronous_commit") == "on"  # the connection's own setting is kept
    finally:
        await pool.close()
