"""A poll answer reads its runs' waiting update requests in one query (services/frontend/reads.py)."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from services.common import db
from services.frontend.errors import WorkflowNotFound
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
        assert list(await asyncio.gather(reads.status("ns", "r1", "r1"), reads.status("ns", "r2", "r2"),
                                         reads.status("ns", "r3", "r3"))) == ["Running", "Completed", None]
    finally:
        await pool.close()


async def test_runs_of_several_result_waits_in_one_read(fresh_dsn: str) -> None:
    """Result waits read their runs' rows together (engine.result, reads.executions): a run
    named, or a workflow's current run where no run is named; each as execution() reads it."""
    await db.migrate(fresh_dsn)
    pool = await db.create_pool(fresh_dsn, min_size=1, max_size=2)
    try:
        summary = orjson.dumps({"status": "Completed", "result": "7"}, option=orjson.OPT_SORT_KEYS)
        for run_id, workflow_id, status in (("r1", "w1", "Running"), ("r2", "w2", "Completed"),
                                            ("r3", "w2", "Running")):
            await pool.execute(
                "INSERT INTO executions (namespace, workflow_id, run_id, shard_id, workflow_type, task_queue,"
                " status, start_time, next_event_id, state, summary)"
                " VALUES ('ns', $1, $2, 0, 'T', 'q', $3, 0, 2, '\\x7b7d', $4)",
                workflow_id, run_id, status, summary if status == "Completed" else None)
        await pool.execute("INSERT INTO current_executions (namespace, workflow_id, run_id, shard_id, status)"
                           " VALUES ('ns', 'w2', 'r2', 0, 'Completed')")
        reads = ReadStore(pool)
        keys = [("ns", "w1", "r1"), ("ns", "w2", ""), ("ns", "w2", "r3"), ("ns", "w1", "r2"), ("ns", "w9", ""),
                ("other", "w1", "r1")]
        found = await reads.executions(keys)
        assert {k: (ex.run_id, ex.status) for k, ex in found.items()} == {
            ("ns", "w1", "r1"): ("r1", "Running"), ("ns", "w2", ""): ("r2", "Completed"),
            ("ns", "w2", "r3"): ("r3", "Running")}
        for key, ex in found.items():  # the row as a lone read has it
            assert ex == await reads.execution(key[0], key[1], key[2] or None)
        # Reads made at once share the query; a run not found is WorkflowNotFound, as alone.
        got = await asyncio.gather(reads.waited_execution("ns", "w2", None), reads.waited_execution("ns", "w1", "r1"),
                                   reads.waited_execution("ns", "w1", "r9"), return_exceptions=True)
        assert [g.run_id for g in got[:2]] == ["r2", "r1"]  # type: ignore[union-attr]
        assert isinstance(got[2], WorkflowNotFound) and got[2].field == "run_id"
    finally:
        await pool.close()
