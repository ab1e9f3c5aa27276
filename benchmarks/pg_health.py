"""PostgreSQL's tables over a sustained run: their size, live and dead rows, and vacuums.

A table that only grows with the workflows kept (executions, history_events until their
namespace's retention) is expected; what must not grow is the dead rows a table carries (its
bloat): the outbox and the timers are written and deleted all the time, and autovacuum has to
keep up with them. :func:`table_health` reads PostgreSQL's own statistics
(``pg_stat_user_tables``), which it updates a moment after each transaction, so a reading is a
close estimate, not an exact count. :func:`server_activity` reads the server's running totals
(WAL written, checkpoints, pages the backends wrote themselves or read from outside shared
buffers, autovacuums): a burst's share of each is the difference of two readings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import asyncpg

__all__ = ["ServerActivity", "TableHealth", "server_activity", "summary", "table_health"]

_QUERY = """
SELECT relname AS table, pg_total_relation_size(relid) AS bytes, n_live_tup AS live, n_dead_tup AS dead,
       autovacuum_count + vacuum_count AS vacuums
  FROM pg_stat_user_tables ORDER BY pg_total_relation_size(relid) DESC
"""


@dataclass(frozen=True)
class TableHealth:
    table: str
    size_mb: float  # with its indexes and TOAST
    live: int
    dead: int
    vacuums: int  # autovacuums and manual vacuums so far

    @property
    def dead_ratio(self) -> float:
        """Dead rows per row the table holds (0 when it holds none)."""
        total = self.live + self.dead
        return self.dead / total if total else 0.0

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "dead_ratio": round(self.dead_ratio, 4)}


async def table_health(dsn: str) -> list[TableHealth]:
    """Every user table of the database at ``dsn``, largest first."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(_QUERY)
    finally:
        await conn.close()
    return [TableHealth(r["table"], r["bytes"] / 1e6, r["live"], r["dead"], r["vacuums"]) for r in rows]


def summary(tables: Sequence[TableHealth]) -> dict[str, Any]:
    """One reading in a line: the total size, the dead rows of all tables and the table with
    the highest share of dead rows."""
    worst = max(tables, key=lambda t: t.dead_ratio, default=None)
    live, dead = sum(t.live for t in tables), sum(t.dead for t in tables)
    return {"size_mb": round(sum(t.size_mb for t in tables), 1), "live": live, "dead": dead,
            "dead_ratio": round(dead / (live + dead), 4) if live + dead else 0.0,
            "worst_table": worst.table if worst else None,
            "worst_dead_ratio": round(worst.dead_ratio, 4) if worst else 0.0}


# pg_stat_bgwriter holds the checkpoint counters up to PostgreSQL 16 (17 moved them to
# pg_stat_checkpointer); a server without them reports None for those.
_ACTIVITY = """
SELECT pg_current_wal_lsn() - '0/0'::pg_lsn AS wal_bytes,
       (SELECT blks_read FROM pg_stat_database WHERE datname = current_database()) AS blks_read,
       (SELECT blks_hit FROM pg_stat_database WHERE datname = current_database()) AS blks_hit,
       (SELECT coalesce(sum(autovacuum_count), 0) FROM pg_stat_user_tables) AS autovacuums
"""
_BGWRITER = "SELECT checkpoints_timed, checkpoints_req, buffers_backend FROM pg_stat_bgwriter"


@dataclass(frozen=True)
class ServerActivity:
    """Running totals of the server since its statistics began (counters only grow)."""

    wal_bytes: int
    blks_read: int  # pages read from outside shared buffers, this database
    blks_hit: int
    autovacuums: int  # of user tables, this database
    checkpoints_timed: int | None = None
    checkpoints_req: int | None = None  # asked for by WAL volume (max_wal_size), not the clock
    buffers_backend: int | None = None  # pages the backends wrote themselves to free a buffer

    def per_workflow(self, before: ServerActivity, n: int) -> dict[str, Any]:
        """What happened between ``before`` and this reading, per workflow where it adds up."""
        def delta(name: str) -> int | None:
            now, then = getattr(self, name), getattr(before, name)
            return None if now is None or then is None else int(now - then)

        reads, hits = delta("blks_read") or 0, delta("blks_hit") or 0
        backend = delta("buffers_backend")
        return {"wal_kb_per_wf": round((self.wal_bytes - before.wal_bytes) / 1024 / n, 3),
                "blks_read_per_wf": round(reads / n, 3),
                "hit_ratio": round(hits / (hits + reads), 5) if hits + reads else None,
                "backend_writes_per_wf": None if backend is None else round(backend / n, 3),
                "checkpoints_timed": delta("checkpoints_timed"), "checkpoints_req": delta("checkpoints_req"),
                "autovacuums": delta("autovacuums")}


async def server_activity(dsn: str) -> ServerActivity:
    """The server's running totals now (see :class:`ServerActivity`)."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(_ACTIVITY)
        try:
            bg = await conn.fetchrow(_BGWRITER)
        except asyncpg.UndefinedColumnError:
            bg = None
    finally:
        await conn.close()
    assert row is not None
    extra = {} if bg is None else {"checkpoints_timed": bg["checkpoints_timed"],
                                   "checkpoints_req": bg["checkpoints_req"], "buffers_backend": bg["buffers_backend"]}
    return ServerActivity(int(row["wal_bytes"]), row["blks_read"], row["blks_hit"], int(row["autovacuums"]), **extra)
