"""Retention's look-up of expired runs reads the expired runs only, not every closed run a
shard keeps (issue 20): on a real PostgreSQL, with the migrations applied."""

from __future__ import annotations

import json
import time
from typing import Any

import asyncpg
import pytest

from services.common import db
from services.history import retention
from services.history.retention import RetentionJob

pytestmark = pytest.mark.timeout(60)

KEPT = 2_000  # closed runs of the default namespace (30 days of retention), closed a minute ago
EXPIRED = 3  # closed runs of a namespace with 1 s of retention, closed an hour ago


async def _seed(conn: asyncpg.Connection) -> None:
    now_ms = int(time.time() * 1000)
    await conn.execute("INSERT INTO shards (shard_id, range_id) VALUES (0, 1)")
    await conn.execute("INSERT INTO namespaces (name, retention_ms) VALUES ('brief', 1000)")
    rows: list[tuple[str, str, str, str, int | None]] = [("default", f"kept-{i}", f"kept-run-{i}", "Completed", now_ms - 60_000) for i in range(KEPT)]
    rows += [("brief", f"old-{i}", f"old-run-{i}", "Completed", now_ms - 3_600_000) for i in range(EXPIRED)]
    rows += [("brief", "open", "open-run", "Running", None)]
    await conn.executemany(
        "INSERT INTO executions (namespace, workflow_id, run_id, shard_id, workflow_type, task_queue, status,"
        " start_time, close_time, next_event_id, state) VALUES ($1, $2, $3, 0, 'W', 'q', $4, 0, $5, 2, '\\x')",
        rows)
    await conn.execute("ANALYZE executions")


def _executions_rows(plan: dict[str, Any]) -> int:
    """Rows the plan's scans of executions produced (EXPLAIN ANALYZE: per loop, rounded)."""
    own = plan["Actual Rows"] * plan["Actual Loops"] if plan.get("Relation Name") == "executions" else 0
    return int(own) + sum(_executions_rows(p) for p in plan.get("Plans", []))


async def test_the_expired_runs_are_found_without_reading_the_closed_runs_kept(fresh_dsn: str) -> None:
    await db.migrate(fresh_dsn)
    conn = await asyncpg.connect(fresh_dsn)
    try:
        await _seed(conn)
        async with conn.transaction():
            raw = await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + retention._EXPIRED,
                                      0, int(time.time() * 1000), 1, 500)
        plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
        # One look-up per namespace (rounding makes it 4 for 3); the scan of every closed run
        # of the shard produced all 2,003 of them.
        assert _executions_rows(plan) <= 2 * EXPIRED
    finally:
        await conn.close()


async def test_a_round_deletes_the_expired_runs_and_keeps_the_others(fresh_dsn: str) -> None:
    await db.migrate(fresh_dsn)
    pool = await db.create_pool(fresh_dsn)
    try:
        async with pool.acquire() as conn:
            await _seed(conn)
        # Another owner's range_id takes nothing.
        assert await RetentionJob(pool, lambda: {0: 2}).round() == 0
        job = RetentionJob(pool, lambda: {0: 1}, batch=2)  # two batches: 2 runs, then 1
        assert await job.round() == EXPIRED
        left = {r["namespace"]: r["n"] for r in await pool.fetch(
            "SELECT namespace, count(*) AS n FROM executions GROUP BY namespace")}
        assert left == {"default": KEPT, "brief": 1}  # the open run stays, however old
    finally:
        await pool.close()
