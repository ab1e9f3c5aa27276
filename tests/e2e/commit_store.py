"""A history store over a freshly migrated real PostgreSQL, and a pool that records the
commit statement's arguments: shared by the tests of the commit functions (0016, 0017)."""

from __future__ import annotations

import asyncpg

from services.common import db
from services.history.store import HistoryStore


async def migrated_store(dsn: str) -> tuple[HistoryStore, asyncpg.Pool]:
    await db.migrate(dsn)
    pool = await db.create_pool(dsn, max_size=2)
    return HistoryStore(pool), pool


class RecordingPool:
    """A pool that records the commit statement's arguments and runs it on the real one."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.args: list[tuple[object, ...]] = []

    async def fetchval(self, query: str, *args: object) -> object:
        self.args.append(args)
        return await self.pool.fetchval(query, *args)
