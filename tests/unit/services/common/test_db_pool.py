"""The pool's connections (services/common/db.py): released without a reset round trip,
and never handed out again after an error that leaves their protocol state unknown."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from services.common import db, outage
from tests.helpers import eventually

pytestmark = pytest.mark.timeout(30)


async def test_a_connection_is_reused_after_an_ordinary_error(fresh_dsn: str) -> None:
    pool = await db.create_pool(fresh_dsn, min_size=1, max_size=1)
    try:
        pid = await pool.fetchval("SELECT pg_backend_pid()")
        with pytest.raises(asyncpg.exceptions.DivisionByZeroError):
            await pool.fetchval("SELECT 1 / 0")
        assert await pool.fetchval("SELECT pg_backend_pid()") == pid
    finally:
        await pool.close()


async def test_a_connection_that_failed_mid_protocol_is_replaced(fresh_dsn: str) -> None:
    # Two queries at once on one connection: asyncpg refuses the second with an interface
    # error, the kind that may leave a connection unusable; the pool must open a new one.
    pool = await db.create_pool(fresh_dsn, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            slow = asyncio.ensure_future(conn.fetchval("SELECT pg_sleep(0.2)"))
            await asyncio.sleep(0)  # let the slow query start
            with pytest.raises(asyncpg.InterfaceError):
                await conn.fetchval("SELECT 1")
            await slow
        assert await pool.fetchval("SELECT pg_backend_pid()") != pid
    finally:
        await pool.close()


async def test_a_server_side_termination_is_an_outage_and_heals(fresh_dsn: str) -> None:
    pool = await db.create_pool(fresh_dsn, min_size=1, max_size=1)
    other = await asyncpg.connect(fresh_dsn)
    try:
        pid = await pool.fetchval("SELECT pg_backend_pid()")
        await other.execute("SELECT pg_terminate_backend($1)", pid)
        # The pool may or may not have seen the connection close before this query: if the
        # query meets the dead connection, what it raises must read as an outage.
        try:
            await pool.fetchval("SELECT 1")
        except Exception as exc:  # noqa: BLE001 - the point is what kind of error it is
            assert outage.is_transient(exc), repr(exc)
        assert await pool.fetchval("SELECT pg_backend_pid()") != pid
    finally:
        await other.close()
        await pool.close()


async def test_a_query_answers_before_its_connection_is_given_back(fresh_dsn: str) -> None:
    # asyncpg gives the connection back first (behind asyncio.shield: more loop turns
    # before the caller goes on); this pool answers first and gives it back in a task.
    pool = await db.create_pool(fresh_dsn, min_size=1, max_size=1)
    try:
        for query in (pool.fetchval("SELECT pg_backend_pid()"), pool.fetchrow("SELECT 1"), pool.fetch("SELECT 1"),
                      pool.execute("SELECT 1")):
            await query
            assert pool.get_idle_size() == 0  # the answer came before the connection went back
            await eventually(lambda: pool.get_idle_size() == 1, timeout=5, what="the connection given back")
        pid = await pool.fetchval("SELECT pg_backend_pid()")
        assert await pool.fetchval("SELECT pg_backend_pid()") == pid  # the next query waits for it, same one
    finally:
        await pool.close()


async def test_a_cancelled_query_gives_its_connection_back(fresh_dsn: str) -> None:
    pool = await db.create_pool(fresh_dsn, min_size=1, max_size=1)
    try:
        slow = asyncio.ensure_future(pool.fetchval("SELECT pg_sleep(30)"))
        await eventually(lambda: pool.get_idle_size() == 0, timeout=5, what="the slow query running")
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        async with asyncio.timeout(10):
            assert await pool.fetchval("SELECT 41 + 1") == 42
    finally:
        await pool.close()


async def test_close_ends_even_with_a_connection_never_given_back(fresh_dsn: str) -> None:
    # A stop must not hang on a connection some task holds forever (asyncpg's close waits).
    pool = await db.create_pool(fresh_dsn, min_size=1, max_size=2)
    pool.close_wait_s = 0.3
    held = await pool.acquire()
    await asyncio.wait_for(pool.close(), timeout=5)
    with pytest.raises(asyncpg.InterfaceError):  # cut off, not left open beside a closed pool
        await held.fetchval("SELECT 1")
