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
import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

from services.common.db import Pool
from services.common.read_budgets import BudgetExhausted, ReadBudgets, current_reading

DEFAULT_TIMEOUT_S = 5.0
T = TypeVar("T")


# A connection the server closed under it (a restart, a kill): a read, which changes nothing,
# goes once more on another connection, which the pool opens anew if it must.
_LOST = (asyncpg.exceptions.ConnectionDoesNotExistError, asyncpg.exceptions.AdminShutdownError,
         asyncpg.exceptions.CannotConnectNowError, ConnectionError)
_AGAIN_AFTER_S = 0.05


class ReadTimedOut(TimeoutError):
    """A bounded read found no connection, or no answer, within its time. ``limit``: the share
    of the pool that was full (read_budgets.py), and ``slots`` its size; None when the pool
    itself had none free or the query did not answer."""

    def __init__(self, message: str = "", *, limit: str | None = None, slots: int | None = None) -> None:
        super().__init__(message)
        self.limit = limit
        self.slots = slots


class BoundedReads:
    """``fetch``, ``fetchrow`` and ``fetchval`` of a pool, each bounded by ``timeout`` seconds;
    with ``budgets``, each first takes a slot of its kind's share of the pool within the same
    bound (read_budgets.py)."""

    def __init__(self, pool: Pool, timeout: float = DEFAULT_TIMEOUT_S, *, budgets: ReadBudgets | None = None) -> None:
        if timeout <= 0:
            raise ValueError("a read's timeout must be positive")
        self.pool = pool
        self.timeout = timeout
        self.budgets = budgets

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self._read(lambda con, left: con.fetch(query, *args, timeout=left))
        return rows

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self._read(lambda con, left: con.fetchrow(query, *args, timeout=left))
        return row

    async def fetchval(self, query: str, *args: Any) -> Any:
        return await self._read(lambda con, left: con.fetchval(query, *args, timeout=left))

    async def run(self, queries: Callable[[Any, float], Awaitable[T]]) -> T:
        """``queries(connection, seconds left)``: several reads on one connection, under one
        bound (each query given what is left of it as its ``timeout``)."""
        result: T = await self._read(queries)
        return result

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
        slot = await self._slot(deadline) if self.budgets is not None else None
        try:
            # The acquire's timeout is also how long the release may wait for a cancelled
            # query before closing the connection.
            con = await self.pool.acquire(timeout=max(deadline - loop.time(), 0.001))
        except BaseException as exc:
            if slot is not None:
                slot()
            if isinstance(exc, TimeoutError):
                raise ReadTimedOut(f"no database connection within {self.timeout:g} s") from exc
            raise
        try:
            return await query(con, max(deadline - loop.time(), 0.001))
        except TimeoutError as exc:
            raise ReadTimedOut(f"the database did not answer a read within {self.timeout:g} s") from exc
        finally:
            # Not awaited: after a timeout the release waits for the query's cancellation.
            given = self.pool.give_back(con)
            if slot is not None:  # held until the connection is back in the pool
                if isinstance(given, asyncio.Future):
                    given.add_done_callback(lambda _: slot())
                else:
                    slot()

    async def _slot(self, deadline: float) -> Callable[[], None] | None:
        """A slot of the budget of this read's kind (read_budgets.py), as the call giving it
        back; None for a read that takes none."""
        assert self.budgets is not None
        budgets, reading = self.budgets, current_reading()
        try:
            held = await budgets.take(reading, max(deadline - asyncio.get_running_loop().time(), 0.001))
        except BudgetExhausted as exc:
            raise ReadTimedOut(f"no database connection for {exc.kind.words} within"
                               f" {self.timeout:g} s: {exc}", limit=exc.kind.value, slots=exc.slots) from exc
        return functools.partial(budgets.give, reading) if held else None


#: What a read-only caller is given: a pool, or the same pool behind a bound.
Reads = asyncpg.Pool | BoundedReads
