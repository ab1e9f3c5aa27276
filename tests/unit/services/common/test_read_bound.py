"""Bounded reads (services/common/read_bound.py), without I/O: a read that finds no
connection, or no answer, in time raises ReadTimedOut (a TimeoutError, answered 503) within
its bound, and the connection it held is given back all the same."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from services.common.read_bound import BoundedReads, ReadTimedOut

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


async def _timed(call: Any) -> float:
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(ReadTimedOut):
        await call
    return loop.time() - began


async def test_a_read_the_server_does_not_answer_times_out_within_its_bound() -> None:
    pool = OnePool(SilentServer(None))
    reads = BoundedReads(pool, BOUND)
    for call in (reads.fetch("q"), reads.fetchrow("q"), reads.fetchval("q")):
        assert await _timed(call) < BOUND * 2
    assert pool.released == [pool.con] * 3
    assert isinstance(ReadTimedOut(), TimeoutError)  # the frontend's 503 for the database


async def test_no_free_connection_times_out_too_and_a_prompt_answer_is_returned() -> None:
    assert await _timed(BoundedReads(OnePool(SilentServer(0), busy=True), BOUND).fetch("q")) < BOUND * 2
    assert await BoundedReads(OnePool(SilentServer(0.01)), BOUND).fetchval("q") == "q"


def test_a_bound_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        BoundedReads(OnePool(SilentServer(0)), 0)


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
    assert await BoundedReads(pool, BOUND).fetchval("q") == "q"
    assert pool.released == [closed, fresh]
    # Once only: a second closed connection is the caller's error (answered 503).
    with pytest.raises(asyncpg.exceptions.ConnectionDoesNotExistError):
        await BoundedReads(Pools(ClosedUnder(), ClosedUnder()), BOUND).fetchval("q")
