"""PostgreSQL's tables over a sustained run: their size, live and dead rows, and vacuums.

A table that only grows with the workflows kept (executions, history_events until their
namespace's retention) is expected; what must not grow is the dead rows a table carries (its
bloat): the outbox and the timers are written and deleted all the time, and autovacuum has to
keep up with them. :func:`table_health` reads PostgreSQL's own statistics
(``pg_stat_user_tables``), which it updates a moment after each transaction, so a reading is a
close estimate, not an exact count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import asyncpg

__all__ = ["TableHealth", "summary", "table_health"]

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
