"""Retention: closed runs older than their namespace's retention are deleted from PostgreSQL.

The history service runs one job for the shards it owns. Each round takes, per owned
shard, up to ``batch`` closed runs whose close time is older than now less their
namespace's retention, and deletes them in one short transaction: executions,
history_events, timers, activity_heartbeats, request_ids and run_start_offsets of the run,
current_executions where it still points at the (closed) run, and the run's visibility
row when that table exists. Rounds repeat until a shard has nothing left to delete.

Only the owner deletes: each batch picks runs only while the shard's range_id is the one
this process acquired (no lock on the shards row, which every commit updates). Runs are
taken with SKIP LOCKED, so the job never waits on a row a commit holds. The audit log on
Kafka is untouched: a deleted run is rebuilt for inspection with ``kadence audit
--rebuild-into`` (README, "Retention").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import asyncpg

from services.common.outcome import RUNNING
from services.common.telemetry import metrics

log = logging.getLogger(__name__)

DEFAULT_BATCH = 500


@dataclass(frozen=True)
class Deleted:
    """Rows deleted by one batch, by table."""

    runs: int = 0
    by_table: tuple[tuple[str, int], ...] = ()

    @property
    def rows(self) -> int:
        return sum(n for _, n in self.by_table)


# (table, DELETE taking $1 run ids and, where named, $2 namespaces and $3 workflow ids), in
# an order that keeps executions last: a run half deleted by a crash is found again.
_DELETES: tuple[tuple[str, str], ...] = (
    ("history_events", "DELETE FROM history_events WHERE run_id = ANY($1::text[])"),
    ("timers", "DELETE FROM timers WHERE run_id = ANY($1::text[])"),
    ("activity_heartbeats", "DELETE FROM activity_heartbeats WHERE run_id = ANY($1::text[])"),
    ("request_ids", "DELETE FROM request_ids r USING unnest($1::text[], $2::text[], $3::text[]) AS d (run, ns, wf)"
                    " WHERE r.namespace = d.ns AND r.workflow_id = d.wf AND r.run_id = d.run"),
    ("run_start_offsets", "DELETE FROM run_start_offsets o USING unnest($1::text[], $2::text[], $3::text[])"
                          " AS d (run, ns, wf) WHERE o.namespace = d.ns AND o.workflow_id = d.wf AND o.run_id = d.run"),
    ("current_executions", "DELETE FROM current_executions c USING unnest($1::text[], $2::text[], $3::text[])"
                           " AS d (run, ns, wf) WHERE c.namespace = d.ns AND c.workflow_id = d.wf"
                           f" AND c.run_id = d.run AND c.status <> '{RUNNING}'"),
    ("executions", "DELETE FROM executions WHERE run_id = ANY($1::text[])"),
)
_VISIBILITY = ("visibility", "DELETE FROM visibility v USING unnest($1::text[], $2::text[]) AS d (run, ns)"
                             " WHERE v.namespace = d.ns AND v.run_id = d.run")

# Per namespace, its expired runs as one range of executions_expiry (migration 0018): the scan
# reads the expired runs, not every closed run the shard keeps. The inner LIMIT bounds each
# namespace's share; rows it locks that the outer LIMIT drops are freed at commit.
_EXPIRED = f"""
SELECT x.run_id, x.namespace, x.workflow_id
FROM namespaces n
CROSS JOIN LATERAL (
    SELECT e.run_id, e.namespace, e.workflow_id, e.close_time FROM executions e
     WHERE e.shard_id = $1 AND e.namespace = n.name AND e.close_time IS NOT NULL
       AND e.close_time < $2 - n.retention_ms AND e.status <> '{RUNNING}'
     ORDER BY e.close_time
     LIMIT $4
       FOR UPDATE OF e SKIP LOCKED) AS x
WHERE EXISTS (SELECT 1 FROM shards s WHERE s.shard_id = $1 AND s.range_id = $3)
ORDER BY x.close_time
LIMIT $4
"""


class RetentionJob:
    """Deletes expired closed runs of the shards ``owned()`` returns (shard id -> range_id)."""

    def __init__(self, pool: asyncpg.Pool, owned: Callable[[], Mapping[int, int]], *,
                 batch: int = DEFAULT_BATCH, clock: Callable[[], float] = time.time) -> None:
        self._pool = pool
        self._owned = owned
        self._batch = max(1, batch)
        self._clock = clock
        self._visibility: bool | None = None  # whether the visibility table exists (looked up once)
        self.deleted_runs = 0

    async def round(self) -> int:
        """One pass over the owned shards; the number of runs deleted."""
        total = 0
        for shard_id, range_id in sorted(self._owned().items()):
            while True:
                done = await self.delete_batch(shard_id, range_id)
                total += done.runs
                if done.runs < self._batch:
                    break
        return total

    async def delete_batch(self, shard_id: int, range_id: int) -> Deleted:
        now_ms = int(self._clock() * 1000)
        async with self._pool.acquire() as conn:
            if self._visibility is None:
                self._visibility = await conn.fetchval("SELECT to_regclass('visibility') IS NOT NULL")
            async with conn.transaction():
                rows = await conn.fetch(_EXPIRED, shard_id, now_ms, range_id, self._batch)
                if not rows:
                    return Deleted()
                runs = [r["run_id"] for r in rows]
                namespaces = [r["namespace"] for r in rows]
                workflows = [r["workflow_id"] for r in rows]
                counts: list[tuple[str, int]] = []
                for table, sql in _DELETES:
                    args = (runs, namespaces, workflows) if "$3" in sql else (runs,)
                    counts.append((table, _count(await conn.execute(sql, *args))))
                if self._visibility:
                    table, sql = _VISIBILITY
                    counts.append((table, _count(await conn.execute(sql, runs, namespaces))))
        done = Deleted(len(rows), tuple(counts))
        self.deleted_runs += done.runs
        m = metrics()
        if m is not None:
            for table, n in counts:
                if n:
                    m.retention_rows_deleted.add(n, {"kadence.table": table})
        log.info("shard %d: retention deleted %d closed runs (%d rows)", shard_id, done.runs, done.rows)
        return done


def _count(status: str) -> int:
    """The row count of a command status such as ``DELETE 12``."""
    return int(status.rsplit(" ", 1)[-1])
