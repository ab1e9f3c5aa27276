"""Migration 0012 on the real PostgreSQL: a status or kind outside the domain's enums is refused, and
the summary of every row written before is taken from its snapshot."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import orjson
import pytest

from services.common import db
from services.history.state import MutableState
from services.history.summary import summary

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


async def test_the_summary_of_a_row_written_before_is_taken_from_its_snapshot(fresh_dsn: str) -> None:
    fixture = Path(__file__).parents[1] / "unit" / "fixtures" / "snapshot_v0.json"
    conn = await asyncpg.connect(fresh_dsn)
    try:
        # The migrations before 0012, a run written by the build before (unversioned snapshot), then 0012.
        await conn.execute("CREATE TABLE schema_migrations (version text PRIMARY KEY,"
                           " applied_at timestamptz NOT NULL DEFAULT now())")
        for path in sorted(db.migrations_dir().glob("*.sql")):
            if path.stem < "0012":
                await conn.execute(path.read_text())
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", path.stem)
        await conn.execute("INSERT INTO executions (namespace, workflow_id, run_id, shard_id, workflow_type,"
                           " task_queue, status, start_time, next_event_id, state) VALUES"
                           " ('ns', 'wf', 'r1', 0, 'T', 'q', 'Running', 0, 21, $1)", fixture.read_bytes())
        await db.migrate(fresh_dsn)
        written = orjson.loads(await conn.fetchval("SELECT summary FROM executions WHERE run_id = 'r1'"))
    finally:
        await conn.close()
    mine = orjson.loads(summary(MutableState.loads(fixture.read_bytes())))
    # Fields the summary gained after 0012 are absent from what 0012 wrote; readers default
    # them (attempt: 1, workflow_task, search_attributes and terminate_reason: null; services/frontend/reads.py).
    added_since = {"attempt", "workflow_task", "search_attributes", "terminate_reason"}
    assert written.keys() == mine.keys() - added_since
    for key in mine.keys() - {"activities", "update_requests"} - added_since:
        assert written[key] == mine[key], key
    # An update request's after_event_id came later too; the frontend reads it absent as 0.
    assert written["update_requests"] == [{k: v for k, v in u.items() if k != "after_event_id"}
                                          for u in mine["update_requests"]]
    assert all(u["after_event_id"] == 0 for u in mine["update_requests"])
    # The activities as the build before kept them: a field added since is absent, not wrong.
    for sid, act in written["activities"].items():
        assert {k: v for k, v in mine["activities"][sid].items() if k in act} == act
