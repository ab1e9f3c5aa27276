"""The batch commit through one function (migration 0016), against a real PostgreSQL."""

from __future__ import annotations

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer

from services.common import db, kafka
from services.history.builder import Mutation, OutboxMessage, Transition
from services.history.errors import ShardOwnershipLost, WorkflowNotNew
from services.history.ledger import RequestSeen
from services.history.state import MutableState
from tests.helpers import eventually

from .commit_store import RecordingPool, migrated_store
from .history_harness import history_running

pytestmark = pytest.mark.timeout(60)


async def test_a_batch_commits_through_one_function_without_the_nested_ones(fresh_dsn) -> None:
    store, pool = await migrated_store(fresh_dsn)
    try:
        # The functions of 0003/0004/0006 are kept for earlier builds; this build calls none.
        await pool.execute("DROP FUNCTION kadence_commit_ledger_batch, kadence_commit_packed_batch,"
                           " kadence_commit_batch")
        range_id, _ = await store.acquire_shard(0, "me")
        reply = OutboxMessage("kadence.replies", b"client", b"answer")
        await store.commit(0, range_id, 42, [], [(1, reply)], [], [],
                           requests={("default", "wf", "req-1"): "run-1"},
                           run_starts={("default", "wf"): ("run-1", 41)})
        assert await pool.fetchval("SELECT kafka_offset FROM shards WHERE shard_id = 0") == 42
        assert await store.applied_requests([("default", "wf", "req-1")]) == {("default", "wf", "req-1"): "run-1"}
        assert await store.run_start_offset("default", "wf") == ("run-1", 41)
        assert [m for _, m in await store.pending_outbox(0)] == [reply]
    finally:
        await pool.close()


async def test_each_refusal_writes_nothing(fresh_dsn) -> None:
    store, pool = await migrated_store(fresh_dsn)
    try:
        range_id, _ = await store.acquire_shard(0, "me")
        await store.commit(0, range_id, 5, [], [], [], [], requests={("default", "wf", "req-1"): "run-1"})
        await pool.execute("INSERT INTO current_executions VALUES ('default', 'taken', 'run-0', 0, 'Running', '')")
        reply = OutboxMessage("kadence.replies", b"client", b"answer")
        with pytest.raises(WorkflowNotNew):
            await store.commit(0, range_id, 9, [], [(1, reply)], [], [], new_workflows=[("default", "taken")])
        with pytest.raises(RequestSeen):
            await store.commit(0, range_id, 9, [], [(1, reply)], [], [],
                               requests={("default", "wf", "req-1"): "run-2"})
        stale = range_id
        await store.acquire_shard(0, "usurper")
        with pytest.raises(ShardOwnershipLost):
            await store.commit(0, stale, 9, [], [(1, reply)], [], [])
        assert await pool.fetchval("SELECT kafka_offset FROM shards WHERE shard_id = 0") == 5
        assert await store.pending_outbox(0) == []
        # What a commit whose answer was lost looks at (runner._landed): the offset, fenced.
        with pytest.raises(ShardOwnershipLost):
            await store.committed_offset(0, stale)
        assert await store.committed_offset(0, stale + 1) == 5
    finally:
        await pool.close()


async def test_a_closing_run_drops_its_timers_by_run_not_key_by_key(fresh_dsn) -> None:
    store, pool = await migrated_store(fresh_dsn)
    try:
        range_id, _ = await store.acquire_shard(0, "me")
        state = MutableState(namespace="default", workflow_id="wf", run_id="run-1", workflow_type="W",
                             task_queue="q", status="Completed", close_time=2, next_event_id=3)
        timers = ("run-1/act_s2c/5", "run-1/act_stc/5")
        await pool.executemany(
            "INSERT INTO timers VALUES (0, $1, 10, 'default', 'wf', 'run-1', 'act_s2c', 5, 0)", [(k,) for k in timers])
        await pool.execute("INSERT INTO timers VALUES (0, 'run-2/user_timer/1', 10, 'default', 'wf2', 'run-2',"
                           " 'user_timer', 1, 0)")
        closing = Mutation(state=state, events=(), encoded_events=(), outbox=(), local_tasks=(), timers_upsert=(),
                           timers_delete=timers, delete_all_timers=True, closed=True, current_changed=False)
        recorder = RecordingPool(pool)
        store.pool = recorder  # type: ignore[assignment]
        await store.commit(0, range_id, None, [closing], [], ["run-2/user_timer/1"], [])
        (args,) = recorder.args
        assert args[11] == ["run-2/user_timer/1"] and args[12] == ["run-1"]
        assert await pool.fetchval("SELECT count(*) FROM timers") == 0
    finally:
        await pool.close()


async def test_the_outbox_row_names_the_audit_records_and_recovery_rebuilds_them_byte_for_byte(fresh_dsn) -> None:
    store, pool = await migrated_store(fresh_dsn)
    try:
        range_id, _ = await store.acquire_shard(0, "me")
        state = MutableState(namespace="default", workflow_id="wf", run_id="run-1")
        t = Transition(state, 1000, 0, headers=(("traceparent", b"00-ab"),))
        t.add("WorkflowExecutionStarted", workflow_type="W", task_queue="q")
        t.add("WorkflowExecutionSignaled", signal_name="go")
        mutation = t.close()
        reply = OutboxMessage("kadence.replies", b"client", b"answer")
        published = [(1, m) for m in (*mutation.outbox, reply)]  # as the relay numbers and publishes them
        assert [m.topic for _, m in published].count("kadence.history") == 2
        await store.commit(0, range_id, 1, [mutation], published, [], [])
        row = await pool.fetchrow("SELECT topics, payloads, audit_runs, audit_events FROM outbox_batches")
        assert row["topics"] == ["kadence.replies"] and row["payloads"] == [b"answer"]
        assert row["audit_runs"] == ["run-1", "run-1"] and row["audit_events"] == [1, 2]
        # A new owner (after a kill -9 before publication) publishes exactly what the relay would have.
        assert await store.pending_outbox(0) == published
    finally:
        await pool.close()


async def test_a_new_owner_publishes_the_audit_records_a_dead_owner_committed(broker, fresh_dsn) -> None:
    # The old owner committed a batch and died before its relay published anything (kill -9):
    # the row names the audit records, and the new owner publishes them from history_events.
    store, pool = await migrated_store(fresh_dsn)
    try:
        range_id, _ = await store.acquire_shard(0, "dead")
        state = MutableState(namespace="default", workflow_id="wf-dead", run_id="run-dead")
        t = Transition(state, 1000, 0)
        t.add("WorkflowExecutionStarted", workflow_type="W", task_queue="q")
        t.add("WorkflowExecutionSignaled", signal_name="go")
        mutation = t.close()
        await store.commit(0, range_id, None, [mutation], [(1, m) for m in mutation.outbox], [], [])
    finally:
        await pool.close()
    expected = [m.value for m in mutation.outbox]
    async with history_running(broker.bootstrap, fresh_dsn):
        consumer = AIOKafkaConsumer(kafka.HISTORY, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                                    fetch_max_wait_ms=50)
        await consumer.start()
        try:
            seen: list[bytes] = []

            async def published() -> bool:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    seen.extend(r.value for r in records if r.key == kafka.workflow_key("default", "wf-dead"))
                return len(seen) >= len(expected)

            await eventually(published, timeout=30, every=0.05, what="the dead owner's audit records published")
            assert seen == expected
        finally:
            await consumer.stop()


async def test_a_database_of_the_build_before_keeps_its_pending_outbox_through_0016(fresh_dsn) -> None:
    # A database migrated up to 0015 with a batch committed and not published (its audit record
    # stored whole, as the build before wrote it), then this build's migrations.
    conn = await asyncpg.connect(fresh_dsn)
    try:
        await conn.execute("CREATE TABLE schema_migrations (version text PRIMARY KEY,"
                           " applied_at timestamptz NOT NULL DEFAULT now())")
        for path in sorted(db.migrations_dir().glob("*.sql")):
            if path.stem < "0016":
                await conn.execute(path.read_text())
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", path.stem)
        await conn.execute("INSERT INTO outbox_batches VALUES (0, 3, $1, $2, $3, $4)",
                           ["kadence.history", "kadence.replies"], [b"default/wf", b"client"],
                           [b"audit record", b"answer"], [None, None])
    finally:
        await conn.close()
    store, pool = await migrated_store(fresh_dsn)
    try:
        assert await store.pending_outbox(0) == [(3, OutboxMessage("kadence.history", b"default/wf", b"audit record")),
                                                 (3, OutboxMessage("kadence.replies", b"client", b"answer"))]
        assert await store.next_outbox_id(0) == 4
    finally:
        await pool.close()
