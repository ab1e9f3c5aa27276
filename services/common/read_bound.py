"""Bounded reads: a read-only query that gives up after a while instead of waiting on a
PostgreSQL that does not answer.

A server that stops answering without going away (paused, a network cut without a reset)
leaves a query waiting with no error, and a frontend read (describe, a history page, a
list) waited as long, holding its caller. A bounded read waits at most ``timeout`` seconds
in all, for a connection and then for its query, and raises :class:`ReadTimedOut`, a
TimeoutError, which the frontend answers 503 with Retry-After. A read whose connection the
server closed (PostgreSQL restarted) is tried once more on another, within the same bound.

Only reads go through here: a commit given a timeout would leave its caller not knowing
whether it happened, so writes (and history's commits on a pool it shares in ``kadence
dev``) never do. The connection of a read that timed out is given back in the background:
asyncpg cancels its query, or closes the connection if that does not answer in time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from services.common.db import Pool

DEFAULT_TIMEOUT_S = 5.0


# A connection the server closed under it (a restart, a kill): a read, which changes nothing,
# goes once more on another connection, which the pool opens anew if it must.
_LOST = (asyncpg.exceptions.ConnectionDoesNotExistError, asyncpg.exceptions.AdminShutdownError,
         asyncpg.exceptions.CannotConnectNowError, ConnectionError)
_AGAIN_AFTER_S = 0.05


class ReadTimedOut(TimeoutError):
    """A bounded read found no connection, or no answer, within its time."""


class BoundedReads:
    """``fetch``, ``fetchrow`` and ``fetchval`` of a pool, each bounded by ``timeout`` seconds."""

    def __init__(self, pool: Pool, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        if timeout <= 0:
            raise ValueError("a read's timeout must be positive")
        self.pool = pool
        self.timeout = timeout

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self._read(lambda con, left: con.fetch(query, *args, timeout=left))
        return rows

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self._read(lambda con, left: con.fetchrow(query, *args, timeout=left))
        return row

    async def fetchval(self, query: str, *args: Any) -> Any:
        return await self._read(lambda con, left: con.fetchval(query, *args, timeout=left))

    async def _read(self, query: Callable[[Any, float], Awaitable[Any]]) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        try:
            return await self._read_once(query, deadline)
        except _LOST:
            if deadline - loop.time() <= _AGAIN_AFTER_S:
                raise
        await asyncio.sleep(_AGAIN_AFTER_S)
        return await self._read_once(query, deadline)

    async def _read_once(self, query: Callable[[Any, float], Awaitable[Any]], deadline: float) -> Any:
        loop = asyncio.get_running_loop()
        try:
            # The acquire's timeout is also how long the release may wait for a cancelled
            # query before closing the connection.
            con = await self.pool.acquire(timeout=max(deadline - loop.time(), 0.001))
        except TimeoutError as exc:
            raise ReadTimedOut(f"no database connection within {self.timeout:g} s") from exc
        try:
            return await query(con, max(deadline - loop.time(), 0.001))
        except TimeoutError as exc:
            raise ReadTimedOut(f"the database did not answer a read within {self.timeout:g} s") from exc
        finally:
            # Not awaited: after a timeout the release waits for the query's cancellation.
            self.pool.give_back(con)


#: What a read-only caller is given: a pool, or the same pool behind a bound.
Reads = asyncpg.Pool | BoundedReads
