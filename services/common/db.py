"""PostgreSQL connections and the versioned migrations under ``infra/migrations``."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

log = logging.getLogger(__name__)

# Any constant works; it serialises concurrent migrators across processes.
_MIGRATION_LOCK = 0x6B6164656E6365


def without_password(dsn: str) -> str:
    """The DSN to show in a message: its password, if any, masked."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def migrations_dir() -> Path:
    root = Path(__file__).resolve().parents[2]
    for candidate in (root / "infra" / "migrations", Path(__file__).resolve().parents[1] / "_infra" / "migrations"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("infra/migrations was not found")


# Errors after which a connection's protocol state cannot be trusted: asyncpg's own
# desynchronisation (seen when the server shuts down mid-query: "cannot switch to state
# 12; another operation (2) is in progress"), a closed or lost connection, and a server
# that is going away. The pool must not hand such a connection out again.
BROKEN_CONNECTION: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.InternalClientError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
)


def _watched(method: Any) -> Any:
    @functools.wraps(method)
    async def watched(self: PooledConnection, *args: Any, **kwargs: Any) -> Any:
        try:
            return await method(self, *args, **kwargs)
        except BROKEN_CONNECTION:
            self.broken = True
            raise
    return watched


class PooledConnection(asyncpg.Connection):  # type: ignore[misc]
    """A pooled connection released without asyncpg's reset round trip, and never
    reused after an error that leaves its protocol state unknown.

    Kadence's pooled connections never LISTEN, take session advisory locks (a
    transaction's, pg_advisory_xact_lock, ends with it), SET session variables or leave
    cursors open (those use dedicated connections), so the
    reset query would cost a round trip on every release for nothing. An open
    transaction is still rolled back by the pool. A query that fails with one of
    ``BROKEN_CONNECTION`` marks the connection; its release closes it, and the pool
    opens a new one on the next acquire.
    """

    broken = False

    def get_reset_query(self) -> str:
        return ""

    async def reset(self, *, timeout: float | None = None) -> None:
        if self.broken:
            # Closing it hands its pool slot back empty: the next acquire connects anew
            # (asyncpg does the same for a connection found closed on release).
            self.terminate()
            return
        await super().reset(timeout=timeout)

    execute = _watched(asyncpg.Connection.execute)
    executemany = _watched(asyncpg.Connection.executemany)
    fetch = _watched(asyncpg.Connection.fetch)
    fetchval = _watched(asyncpg.Connection.fetchval)
    fetchrow = _watched(asyncpg.Connection.fetchrow)
    fetchmany = _watched(asyncpg.Connection.fetchmany)


class Pool(asyncpg.Pool):  # type: ignore[misc]
    """A pool whose one-query calls (``execute``, ``fetch``, ``fetchrow``, ``fetchval``)
    return as soon as their query has answered, and give the connection back in a task
    of their own.

    asyncpg's own give the connection back first, behind ``asyncio.shield`` (a task and
    two more turns of the event loop, in which whatever else is ready runs first): on
    the path of a workflow those turns came after each of its batch commits, before the
    tasks and replies it committed were handed on. A connection given back later is
    still given back once, whatever happened to its query (cancelled, failed): the next
    acquire waits for it as for any connection in use, and ``close`` waits for it.
    """

    # asyncpg's close waits for every connection in use, however long; a service's stop
    # must end (a supervisor or a test waits for it), so past this the rest are cut off.
    close_wait_s = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._giving_back: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        try:
            await asyncio.wait_for(super().close(), self.close_wait_s)
        except TimeoutError:
            # asyncpg terminated the pool when its close was cancelled; this says why.
            log.warning("closing the database pool: connections still in use after %.0f s were cut off",
                        self.close_wait_s)
            self.terminate()

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str:
        return str(await self._one(lambda con: con.execute(query, *args, timeout=timeout)))

    async def fetch(self, query: str, *args: Any, timeout: float | None = None, record_class: Any = None) -> Any:
        return await self._one(lambda con: con.fetch(query, *args, timeout=timeout, record_class=record_class))

    async def fetchrow(self, query: str, *args: Any, timeout: float | None = None, record_class: Any = None) -> Any:
        return await self._one(lambda con: con.fetchrow(query, *args, timeout=timeout, record_class=record_class))

    async def fetchval(self, query: str, *args: Any, column: int = 0, timeout: float | None = None) -> Any:
        return await self._one(lambda con: con.fetchval(query, *args, column=column, timeout=timeout))

    async def _one(self, query: Callable[[Any], Awaitable[Any]]) -> Any:
        """``query`` on a connection of the pool, which is given back after it answers."""
        con = await self.acquire()
        try:
            return await query(con)
        finally:
            self.give_back(con)

    def give_back(self, con: Any) -> asyncio.Task[None]:
        """Release ``con`` in a task of its own (returned, done once ``con`` is back): the
        caller goes on at once, and a connection whose query was cancelled is still given
        back (or closed) once."""
        task = asyncio.get_running_loop().create_task(self.release(con))
        self._giving_back.add(task)
        task.add_done_callback(self._given_back)
        return task

    def _given_back(self, task: asyncio.Task[None]) -> None:
        self._giving_back.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            # asyncpg terminated the connection (its pool slot is free again); the query's
            # caller had its answer or its own error already.
            log.warning("a pooled connection could not be given back cleanly (%r); it was closed", exc)


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> Pool:
    # asyncpg.create_pool with its defaults, building this module's Pool.
    pool = Pool(dsn, min_size=min_size, max_size=max_size, max_queries=50_000,
                max_inactive_connection_lifetime=300.0, loop=None, connection_class=PooledConnection,
                record_class=asyncpg.Record)
    await pool
    return pool


class ClusterMismatch(Exception):
    """A process is configured other than the cluster it joins was created."""


async def cluster_setting(conn: asyncpg.Connection | asyncpg.Pool, name: str) -> str | None:
    """A setting fixed when the cluster was created (migration 0005), or None if not yet."""
    value = await conn.fetchval("SELECT value FROM cluster_settings WHERE name = $1", name)
    return None if value is None else str(value)


async def fix_cluster_setting(conn: asyncpg.Connection | asyncpg.Pool, name: str, value: str, *,
                              hint: str = "") -> None:
    """Record ``value`` for ``name`` if the cluster has none; raise ClusterMismatch if it has another."""
    await conn.execute("INSERT INTO cluster_settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                       name, value)
    stored = await cluster_setting(conn, name)
    if stored != value:
        raise ClusterMismatch(f"this cluster was created with {name} = {stored}, not {value}{hint}")


async def migrate(dsn: str) -> list[str]:
    """Apply every migration not yet applied, in file-name order; return those applied."""
    conn = await asyncpg.connect(dsn)
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for path in sorted(migrations_dir().glob("*.sql")):
                if path.stem in done:
                    continue
                async with conn.transaction():
                    await conn.execute(path.read_text())
                    await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", path.stem)
                applied.append(path.stem)
                log.info("applied migration %s", path.stem)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    finally:
        await conn.close()
    return applied
