"""Migration 0012 on the real PostgreSQL: a status or kind outside the domain's enums is refused."""

from __future__ import annotations

import asyncpg
import pytest

from services.common import db

pytestmark = pytest.mark.timeout(60)


async def test_a_status_or_kind_outside_the_enums_is_refused(fresh_dsn: str) -> None:
    await db.migrate(fresh_dsn)
    conn = await asyncpg.connect(fresh_dsn)
    try:
        insert = ("INSERT INTO executions (namespace, workflow_id, run_id, shard_id, workflow_type, task_queue, status,"
                  " start_time, next_event_id, state) VALUES ('ns', 'wf', $1, 0, 'T', 'q', $2, 0, 2, '{}')")
        await conn.execute(insert, "r1", "Running")
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(insert, "r2", "running")
        timer = ("INSERT INTO timers (shard_id, timer_key, fire_at, namespace, workflow_id, run_id, kind, ref)"
                 " VALUES (0, $1, 0, 'ns', 'wf', 'r1', $2, 0)")
        await conn.execute(timer, "r1/user_timer/t", "user_timer")
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(timer, "r1/nap/t", "nap")
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("INSERT INTO task_backlog (task_id, partition, namespace, task_queue, kind, payload)"
                               " VALUES ('t', 0, 'ns', 'q', 'query', '')")
        indexes = {r["indexname"] for r in await conn.fetch("SELECT indexname FROM pg_indexes"
                                                              " WHERE tablename = 'executions'")}
        assert "executions_open" not in indexes and "executions_by_workflow" not in indexes
    finally:
        await conn.close()
