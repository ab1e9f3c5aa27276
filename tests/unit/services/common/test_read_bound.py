"""Bounded reads (services/common/read_bound.py), without I/O: a read that finds no
connection, or no answer, in time raises ReadTimedOut (a TimeoutError, answered 503) within
its bound, and the connection it held is given back all the same."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import asyncpg
import pytest

from services.common.db import Pool
from services.common.read_bound import BoundedReads, ReadTimedOut
from services.common.read_budgets import ReadBudgets, ReadKind, done_reading, reading_as

pytestmark = pytest.mark.timeout(10)
BOUND = 0.2


class SilentServer:
    """A connection whose queries answer after ``delay`` seconds (or never: None), as asyncpg's
    do with a ``timeout``: TimeoutError once it passes."""

    def __init__(self, delay: float | None) -> None:
        self.delay = delay

    async def fetch(self, query: str, *args: Any, timeout: float | None = None) -> list[str]:
        async with asyncio.timeout(timeout):
            await asyncio.sleep(3600 if self.delay is None else self.delay)
        return [query]

    async def fetchrow(self, query: str, *args: Any, timeout: float | None = None) -> str:
        return (await self.fetch(query, timeout=timeout))[0]

    async def fetchval(self, query: str, *args: Any, timeout: float | None = None) -> str:
        return (await self.fetch(query, timeout=timeout))[0]


class OnePool:
    """A pool of one connection, or of none free (``busy``)."""

    def __init__(self, con: SilentServer, *, busy: bool = False) -> None:
        self.con, self.busy = con, busy
        self.released: list[SilentServer] = []

    async def acquire(self, *, timeout: float | None = None) -> SilentServer:
        if self.busy:
            async with asyncio.timeout(timeout):
                await asyncio.Event().wait()
        return self.con

    def give_back(self, con: SilentServer) -> None:
        self.released.append(con)


def _bounded(pool: object, timeout: float, *, budgets: ReadBudgets | None = None) -> BoundedReads:
    """BoundedReads over a stand-in pool: each has what it uses of a db.Pool (acquire,
    give_back), which is all the cast claims."""
    return BoundedReads(cast(Pool, pool), timeout, budgets=budgets)


async def _timed(call: Any) -> float:
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(ReadTimedOut):
        await call
    return loop.time() - began


async def test_a_read_the_server_does_not_answer_times_out_within_its_bound() -> None:
    pool = OnePool(SilentServer(None))
    reads = _bounded(pool, BOUND)
    for call in (reads.fetch("q"), reads.fetchrow("q"), reads.fetchval("q")):
        assert await _timed(call) < BOUND * 2
    assert pool.released == [pool.con] * 3
    assert isinstance(ReadTimedOut(), TimeoutError)  # the frontend's 503 for the database


async def test_no_free_connection_times_out_too_and_a_prompt_answer_is_returned() -> None:
    assert await _timed(_bounded(OnePool(SilentServer(0), busy=True), BOUND).fetch("q")) < BOUND * 2
    assert await _bounded(OnePool(SilentServer(0.01)), BOUND).fetchval("q") == "q"


def test_a_bound_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        _bounded(OnePool(SilentServer(0)), 0)


class ClosedUnder:
    """A connection the server closed (PostgreSQL restarted): its query fails as asyncpg's does."""

    async def fetchval(self, query: str, *args: Any, timeout: float | None = None) -> str:
        raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation")


class Pools:
    """Hands out the given connections in turn."""

    def __init__(self, *cons: Any) -> None:
        self.cons = list(cons)
        self.released: list[Any] = []

    async def acquire(self, *, timeout: float | None = None) -> Any:
        return self.cons.pop(0)

    def give_back(self, con: Any) -> None:
        self.released.append(con)


async def test_a_read_whose_connection_the_server_closed_goes_once_more_on_another() -> None:
    closed, fresh = ClosedUnder(), SilentServer(0)
    pool = Pools(closed, fresh)
    assert await _bounded(pool, BOUND).fetchval("q") == "q"
    assert pool.released == [closed, fresh]
    # Once only: a second closed connection is the caller's error (answered 503).
    with pytest.raises(asyncpg.exceptions.ConnectionDoesNotExistError):
        await _bounded(Pools(ClosedUnder(), ClosedUnder()), BOUND).fetchval("q")


class LaterPool:
    """Gives a connection back in a task, as db.Pool does: done once it is back."""

    def __init__(self, con: SilentServer) -> None:
        self.con = con
        self.back = asyncio.Event()
        self.released: list[SilentServer] = []

    async def acquire(self, *, timeout: float | None = None) -> SilentServer:
        return self.con

    def give_back(self, con: SilentServer) -> asyncio.Task[None]:
        async def release() -> None:
            await self.back.wait()
            self.released.append(con)
        return asyncio.get_running_loop().create_task(release())


async def test_a_read_holds_its_kinds_slot_until_its_connection_is_back() -> None:
    budgets = ReadBudgets(2)  # one slot for every read
    pool = LaterPool(SilentServer(0))
    reads = _bounded(pool, BOUND, budgets=budgets)
    token = reading_as(ReadKind.HISTORY, "noisy")
    try:
        assert await reads.fetchval("q") == "q"
        assert budgets.in_use(ReadKind.HISTORY) == 1  # answered, the connection not back yet
        with pytest.raises(ReadTimedOut) as caught:
            await reads.fetchval("q")
        assert (caught.value.limit, caught.value.slots) == ("history_reads", 1)
        assert "history reads may hold 1 of the frontend's 2 connections" in str(caught.value)
        waiting = asyncio.ensure_future(reads.fetchval("q"))
        await asyncio.sleep(0.01)
        pool.back.set()  # the first connection comes back: the waiting read goes on within its bound
        assert await asyncio.wait_for(waiting, BOUND) == "q"
    finally:
        done_reading(token)


async def test_a_read_that_finds_no_connection_gives_its_slot_back() -> None:
    budgets = ReadBudgets(4)
    reads = _bounded(OnePool(SilentServer(0), busy=True), BOUND, budgets=budgets)
    with pytest.raises(ReadTimedOut) as caught:
        await reads.fetch("q")
    assert caught.value.limit is None  # the pool's own wait, not a share's
    assert budgets.in_use(ReadKind.LOOKUPS) == 0
