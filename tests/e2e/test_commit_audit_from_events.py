"""The commit of migration 0017: the audit records named from the batch's events, against a real PostgreSQL."""

from __future__ import annotations

import pytest

from services.history.builder import OutboxMessage, Transition
from services.history.state import MutableState

from .commit_store import RecordingPool, migrated_store

pytestmark = pytest.mark.timeout(60)


def _transition(run_id: str, headers: tuple[tuple[str, bytes], ...] = ()) -> Transition:
    t = Transition(MutableState(namespace="default", workflow_id=f"wf-{run_id}", run_id=run_id), 1000, 0,
                   headers=headers)
    t.add("WorkflowExecutionStarted", workflow_type="W", task_queue="q")
    t.add("WorkflowExecutionSignaled", signal_name="go")
    return t


async def test_an_untraced_batch_sends_no_audit_arrays_and_recovery_rebuilds_its_records(fresh_dsn) -> None:
    store, pool = await migrated_store(fresh_dsn)
    try:
        range_id, _ = await store.acquire_shard(0, "me")
        first, second = _transition("run-1").close(), _transition("run-2").close()
        reply = OutboxMessage("kadence.replies", b"client", b"answer")
        published = [(1, m) for m in (*first.outbox, *second.outbox, reply)]
        recorder = RecordingPool(pool)
        store.pool = recorder  # type: ignore[assignment]
        await store.commit(0, range_id, 1, [first, second], published, [], [])
        (args,) = recorder.args
        # One argument for the audit records' headers, NULL: no array element per event.
        assert len(args) == 27 and args[26] is None
        row = await pool.fetchrow("SELECT topics, audit_runs, audit_events, audit_headers FROM outbox_batches")
        assert row["topics"] == ["kadence.replies"]
        assert row["audit_runs"] == ["run-1", "run-1", "run-2", "run-2"] and row["audit_events"] == [1, 2, 1, 2]
        assert row["audit_headers"] is None
        store.pool = pool
        assert await store.pending_outbox(0) == published
    finally:
        await pool.close()


async def test_a_traced_batch_keeps_each_audit_records_headers(fresh_dsn) -> None:
    store, pool = await migrated_store(fresh_dsn)
    try:
        range_id, _ = await store.acquire_shard(0, "me")
        traced, untraced = _transition("run-1", (("traceparent", b"00-ab"),)).close(), _transition("run-2").close()
        published = [(1, m) for m in (*traced.outbox, *untraced.outbox)]
        await store.commit(0, range_id, 1, [traced, untraced], published, [], [])
        assert await store.pending_outbox(0) == published
        assert [m.headers for _, m in published] == [(("traceparent", b"00-ab"),)] * 2 + [()] * 2
    finally:
        await pool.close()


async def test_a_batch_without_events_names_no_audit_records(fresh_dsn) -> None:
    store, pool = await migrated_store(fresh_dsn)
    try:
        range_id, _ = await store.acquire_shard(0, "me")
        reply = OutboxMessage("kadence.replies", b"client", b"answer")
        await store.commit(0, range_id, 1, [], [(1, reply)], [], [])
        assert await store.pending_outbox(0) == [(1, reply)]
    finally:
        await pool.close()


async def test_a_row_the_build_before_wrote_is_recovered_after_0017(fresh_dsn) -> None:
    # The build before calls kadence_commit of 0016 (kept), naming every audit record and its
    # headers one by one; a new owner of this build publishes that row as it would its own.
    store, pool = await migrated_store(fresh_dsn)
    try:
        range_id, _ = await store.acquire_shard(0, "me")
        m = _transition("run-1", (("traceparent", b"00-ab"),)).close()
        await store.commit(0, range_id, 1, [m], [], [], [])  # the run's events, no outbox row
        before = "SELECT kadence_commit(" + ", ".join(f"${i}" for i in range(1, 30)) + ")"
        empty: list[object] = []
        assert await pool.fetchval(
            before, 0, range_id, 2, empty, empty, empty, 2, empty, empty, empty, empty, empty, empty, empty,
            empty, empty, empty, empty, empty, empty, empty, empty, empty, empty, empty, empty,
            ["run-1", "run-1"], [1, 2], [b'[["traceparent","30302d6162"]]'] * 2) == 0
        assert await store.pending_outbox(0) == [(2, r) for r in m.outbox]
    finally:
        await pool.close()
