"""The relay's delete of published outbox rows (HistoryStore.delete_outbox) commits without
waiting for the WAL flush, deletes exactly what it is asked to, and only for the shard's
current owner (fenced by range_id)."""

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
        range_id, _ = await store.acquire_shard(0, "owner")
        async with pool.acquire() as conn:
            await _outbox(conn, 0, range(1, 11))
            await _outbox(conn, 1, range(1, 3))
        unflushed = 0
        for up_to in range(2, 11, 2):
            await store.delete_outbox(0, up_to, range_id)
            # A synchronous commit returns only once its WAL is flushed; this one may return
            # before (the WAL writer flushes it within its delay, so count, not insist on each).
            unflushed += await pool.fetchval("SELECT pg_current_wal_flush_lsn() < pg_current_wal_insert_lsn()")
        assert unflushed > 0
        rows = await pool.fetch("SELECT shard_id, id FROM outbox_batches ORDER BY shard_id, id")
        assert [tuple(r) for r in rows] == [(1, 1), (1, 2)]  # shard 0's up to 10 gone, shard 1's kept
        assert await pool.fetchval("SHOW synchronous_commit") == "on"  # the connection's own setting is kept
    finally:
        await pool.close()


async def test_a_former_owner_deletes_nothing_of_the_new_owners_rows(fresh_dsn: str) -> None:
    """An owner frozen (SIGSTOP) with a delete in hand wakes after two hand-overs: the last
    owner found no rows and numbered its own from 1 again; none of them is published yet."""
    await db.migrate(fresh_dsn)
    pool = await db.create_pool(fresh_dsn, min_size=1, max_size=1)
    try:
        store = HistoryStore(pool)
        frozen, _ = await store.acquire_shard(0, "frozen")
        await store.acquire_shard(0, "second")  # published and deleted everything the frozen one left
        newest, _ = await store.acquire_shard(0, "third")
        assert await store.next_outbox_id(0) == 1
        async with pool.acquire() as conn:
            await _outbox(conn, 0, range(1, 4))
        await store.delete_outbox(0, 10, frozen)  # the frozen owner's delete, up to its own last id
        assert [r["id"] for r in await pool.fetch("SELECT id FROM outbox_batches ORDER BY id")] == [1, 2, 3]
        await store.delete_outbox(0, 2, newest)
        assert [r["id"] for r in await pool.fetch("SELECT id FROM outbox_batches ORDER BY id")] == [3]
    finally:
        await pool.close()
