"""The pool's connections (services/common/db.py): released without a reset round trip,
and never handed out again after an error that leaves their protocol state unknown."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from services.common import db, outage

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
