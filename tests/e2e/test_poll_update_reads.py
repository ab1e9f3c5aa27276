"""A poll answer reads its runs' waiting update requests in one query (services/frontend/reads.py)."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from services.common import db
from services.frontend.reads import ReadStore

pytestmark = pytest.mark.timeout(60)


async def test_update_requests_of_several_runs_in_one_read(fresh_dsn: str) -> None:
    await db.migrate(fresh_dsn)
    pool = await db.create_pool(fresh_dsn, min_size=1, max_size=2)
    try:
        waiting = [{"update_id": "u1", "name": "a", "input": [1]}, {"update_id": "u2", "name": "b", "input": []}]
        for run_id, requests in (("r1", waiting), ("r2", []), ("r3", [])):
            summary = orjson.dumps({"status": "Running", "update_requests": requests}, option=orjson.OPT_SORT_KEYS)
            await pool.execute(
                "INSERT INTO executions (namespace, workflow_id, run_id, shard_id, workflow_type, task_queue,"
                " status, start_time, next_event_id, state, summary)"
                " VALUES ('ns', $1, $1, 0, 'T', 'q', 'Running', 0, 2, '\\x7b7d', $2)",
                run_id, summary)
        reads = ReadStore(pool)
        found = await reads.update_requests_of(["r1", "r2", "r3", "r1", "missing"])
        assert found == {"r1": waiting}
        assert found["r1"] == await reads.update_requests("r1")  # the same as one run's read
        assert await reads.update_requests_of([]) == {}
    finally:
        await pool.close()


async def test_statuses_of_several_runs_in_one_read(fresh_dsn: str) -> None:
    """Result waits read their runs' status together (services/frontend/status_reads.py)."""
    await db.migrate(fresh_dsn)
    pool = await db.create_pool(fresh_dsn, min_size=1, max_size=2)
    try:
        for run_id, status in (("r1", "Running"), ("r2", "Completed")):
            await pool.execute(
                "INSERT INTO executions (namespace, workflow_id, run_id, shard_id, workflow_type, task_queue,"
                " status, start_time, next_event_id, state, summary)"
                " VALUES ('ns', $1, $1, 0, 'T', 'q', $2, 0, 2, '\\x7b7d', NULL)", run_id, status)
        reads = ReadStore(pool)
        assert await reads.statuses([("ns", "r1", "r1"), ("ns", "r2", "r2"), ("ns", "r9", "r9"),
                                     ("other", "r1", "r1"), ("ns", "r2", "r1")]) == {
            ("ns", "r1", "r1"): "Running", ("ns", "r2", "r2"): "Completed"}
        # One run's read, made with others at once, goes through the same query.
        assert await asyncio.gather(reads.status("ns", "r1", "r1"), reads.status("ns", "r2", "r2"),
                                    reads.status("ns", "r3", "r3")) == ["Running", "Completed", None]
    finally:
        await pool.close()
