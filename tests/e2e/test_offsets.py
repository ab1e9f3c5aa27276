"""A shard never rewinds on a guess, and a command for "the workflow" acts once, on the run
that was current when it was accepted (services/history/resume.py, ledger.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from kadence_protocol import avro
from services.common import db, kafka
from services.history import HistoryService

from .history_harness import SHARDS, Topics, history_of, settings_for, start_record, task_ref, until

pytestmark = pytest.mark.timeout(120)


@asynccontextmanager
async def _history(bootstrap: str, dsn: str, **settings: Any) -> AsyncIterator[HistoryService]:
    await db.migrate(dsn)
    await kafka.ensure_topics(bootstrap, SHARDS, 2)
    service = HistoryService(settings_for(bootstrap, dsn, **settings))
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


def _terminate(workflow_id: str, **kw: Any) -> dict[str, Any]:
    return {"namespace": "default", "workflow_id": workflow_id, "run_id": None, "reason": "stop",
            "request_id": uuid.uuid4().hex, "identity": "test", "reply_to": "tester"} | kw


def _signal(workflow_id: str, **kw: Any) -> dict[str, Any]:
    return {"namespace": "default", "workflow_id": workflow_id, "run_id": None, "signal_name": "go",
            "input": '["x"]', "request_id": uuid.uuid4().hex, "identity": "test", "reply_to": "tester"} | kw


async def _send_together(io: Topics, *records: tuple[str, dict[str, Any]]) -> None:
    """Produce the records in one request, so the broker stores them as one batch."""
    futures = [await io.producer.send(kafka.REQUESTS, avro.encode(name, rec),
                                      key=kafka.workflow_key(rec["namespace"], rec["workflow_id"]))
               for name, rec in records]
    await asyncio.gather(*futures)


async def _stored_and_end(bootstrap: str, dsn: str, workflow_id: str) -> tuple[int, int, int]:
    """(partition, stored offset, log end as the broker reports it) of the workflow's shard."""
    conn = await asyncpg.connect(dsn)
    try:
        partition = await conn.fetchval(
            "SELECT shard_id FROM current_executions WHERE workflow_id = $1", workflow_id)
        stored = await conn.fetchval("SELECT kafka_offset FROM shards WHERE shard_id = $1", partition)
    finally:
        await conn.close()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tp = TopicPartition(kafka.REQUESTS, partition)
        end = (await consumer.end_offsets([tp]))[tp]
    finally:
        await consumer.stop()
    return int(partition), int(stored), int(end)


async def _runs(dsn: str, workflow_id: str) -> dict[str, str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT run_id, status FROM executions WHERE workflow_id = $1", workflow_id)
    finally:
        await conn.close()
    return {r["run_id"]: r["status"] for r in rows}


async def _two_runs(io: Topics, wid: str, terminate: dict[str, Any]) -> tuple[str, str]:
    """Run 1 started, then terminated and run 2 started in one batch of two records."""
    first = start_record(wid)
    await io.send("StartWorkflowExecution", first)
    run1 = (await io.next("kadence.replies", request_id=first["request_id"]))["run_id"]
    second = start_record(wid)
    await _send_together(io, ("TerminateWorkflowExecution", terminate),
                         ("StartWorkflowExecution", second))
    if terminate["reply_to"]:
        assert (await io.next("kadence.replies", request_id=terminate["request_id"]))["run_id"] == run1
    reply = await io.next("kadence.replies", request_id=second["request_id"])
    assert reply["ok"] and reply["created"]
    return run1, reply["run_id"]


async def test_a_restart_on_an_idle_partition_does_not_run_old_commands_again(broker, fresh_dsn) -> None:
    wid = f"idle-{uuid.uuid4().hex[:6]}"
    async with Topics(broker.bootstrap) as io:
        async with _history(broker.bootstrap, fresh_dsn):
            run1, run2 = await _two_runs(io, wid, _terminate(wid))
        _, stored, end = await _stored_and_end(broker.bootstrap, fresh_dsn, wid)
        # The development broker reports the end of the partition as its last batch's base + 1.
        assert end < stored, "the broker reported the true end: this test needs it to report less"
        async with _history(broker.bootstrap, fresh_dsn) as service:
            await until(lambda: len(service.shards) == SHARDS)  # resumed before anything new comes
            ping = _signal(wid)
            await io.send("SignalWorkflowExecution", ping)
            reply = await io.next("kadence.replies", request_id=ping["request_id"])
            assert reply["ok"] and reply["run_id"] == run2, reply
        assert await _runs(fresh_dsn, wid) == {run1: "Terminated", run2: "Running"}
        assert [e["event_type"] for e in await history_of(fresh_dsn, run2)].count("WorkflowExecutionSignaled") == 1


async def test_a_terminate_produced_again_after_the_next_run_started_does_not_touch_it(broker, fresh_dsn) -> None:
    wid = f"again-{uuid.uuid4().hex[:6]}"
    async with Topics(broker.bootstrap) as io, _history(broker.bootstrap, fresh_dsn):
        terminate = _terminate(wid)
        run1, run2 = await _two_runs(io, wid, terminate)
        await io.send("TerminateWorkflowExecution", terminate)  # a client's retry: the same request id
        reply = await io.next("kadence.replies", request_id=terminate["request_id"])
        assert reply["ok"] and reply["run_id"] == run1
        assert await _runs(fresh_dsn, wid) == {run1: "Terminated", run2: "Running"}


async def test_an_operator_rewind_reads_old_records_again_without_applying_them(broker, fresh_dsn) -> None:
    wid = f"rewind-{uuid.uuid4().hex[:6]}"
    async with Topics(broker.bootstrap) as io:
        async with _history(broker.bootstrap, fresh_dsn):
            # A terminate without request id: only its offset tells it predates run 2.
            run1, run2 = await _two_runs(io, wid, _terminate(wid, request_id="", reply_to=None))
            signal = _signal(wid)
            await io.send("SignalWorkflowExecution", signal)
            assert (await io.next("kadence.replies", request_id=signal["request_id"]))["run_id"] == run2
        partition, stored, _ = await _stored_and_end(broker.bootstrap, fresh_dsn, wid)
        conn = await asyncpg.connect(fresh_dsn)
        try:  # the broker lost records: the stored offset is past anything it has
            await conn.execute("UPDATE shards SET kafka_offset = kafka_offset + 1000 WHERE shard_id = $1",
                               partition)
        finally:
            await conn.close()
        async with _history(broker.bootstrap, fresh_dsn, rewind_lost_partitions=True) as service:
            replies = [await io.next("kadence.replies", request_id=signal["request_id"])]
            assert replies[0]["ok"] and replies[0]["run_id"] == run2  # the recorded answer
            ping = _signal(wid)
            await io.send("SignalWorkflowExecution", ping)
            assert (await io.next("kadence.replies", request_id=ping["request_id"]))["run_id"] == run2
            assert service.shards[partition].ledger.replay_until == stored + 1000
        assert await _runs(fresh_dsn, wid) == {run1: "Terminated", run2: "Running"}
        kinds = [e["event_type"] for e in await history_of(fresh_dsn, run2)]
        assert kinds.count("WorkflowExecutionSignaled") == 2 and "WorkflowExecutionTerminated" not in kinds


async def test_a_signal_delivered_twice_across_a_continue_as_new_is_applied_once(broker, fresh_dsn) -> None:
    wid = f"can-{uuid.uuid4().hex[:6]}"
    async with Topics(broker.bootstrap) as io, _history(broker.bootstrap, fresh_dsn):
        start = start_record(wid)
        await io.send("StartWorkflowExecution", start)
        run1 = (await io.next("kadence.replies", request_id=start["request_id"]))["run_id"]
        wt = await io.next("kadence.tasks", "WorkflowTask", workflow_id=wid)
        await io.send("RespondWorkflowTaskCompleted", task_ref(wt) | {"commands": []})
        signal = _signal(wid)
        await io.send("SignalWorkflowExecution", signal)
        assert (await io.next("kadence.replies", request_id=signal["request_id"]))["run_id"] == run1
        wt2 = await io.next("kadence.tasks", "WorkflowTask", workflow_id=wid, run_id=run1)
        await io.send("RespondWorkflowTaskCompleted", task_ref(wt2) | {"commands": [
            {"command_type": "ContinueAsNewWorkflowExecution",
             "attributes": {"workflow_type": "Greet", "task_queue": "q", "input": "[]"}}]})
        run2 = (await io.next("kadence.tasks", "WorkflowTask", workflow_id=wid, scheduled_event_id=2))["run_id"]
        assert run2 != run1
        await io.send("SignalWorkflowExecution", signal)  # redelivered, same request id
        reply = await io.next("kadence.replies", request_id=signal["request_id"])
        assert reply["ok"] and reply["run_id"] == run1
        # A later signal shows the shard has read past the copy.
        later = _signal(wid)
        await io.send("SignalWorkflowExecution", later)
        assert (await io.next("kadence.replies", request_id=later["request_id"]))["run_id"] == run2
        kinds = [e["event_type"] for e in await history_of(fresh_dsn, run2)]
        assert kinds.count("WorkflowExecutionSignaled") == 1


async def test_a_request_id_no_longer_in_memory_is_found_in_postgresql(broker, fresh_dsn) -> None:
    wid = f"forgot-{uuid.uuid4().hex[:6]}"
    async with Topics(broker.bootstrap) as io, _history(broker.bootstrap, fresh_dsn) as service:
        start = start_record(wid)
        await io.send("StartWorkflowExecution", start)
        run1 = (await io.next("kadence.replies", request_id=start["request_id"]))["run_id"]
        signal = _signal(wid)
        await io.send("SignalWorkflowExecution", signal)
        await io.next("kadence.replies", request_id=signal["request_id"])
        for shard in service.shards.values():
            shard.ledger.applied.clear()  # as if evicted, or applied by an earlier owner
            for run_id in list(shard.cache.runs):  # the run's own list of signal ids goes too
                shard.cache.runs[run_id].signal_request_ids.clear()
        await io.send("SignalWorkflowExecution", signal)
        reply = await io.next("kadence.replies", request_id=signal["request_id"])
        assert reply["ok"] and reply["run_id"] == run1
        kinds = [e["event_type"] for e in await history_of(fresh_dsn, run1)]
        assert kinds.count("WorkflowExecutionSignaled") == 1



async def test_a_shard_taken_over_on_an_idle_partition_resumes_at_its_stored_offset(broker, fresh_dsn) -> None:
    wid = f"takeover-{uuid.uuid4().hex[:6]}"
    await db.migrate(fresh_dsn)
    await kafka.ensure_topics(broker.bootstrap, SHARDS, 2)
    services = [HistoryService(settings_for(broker.bootstrap, fresh_dsn)) for _ in range(2)]
    running: list[HistoryService] = []
    try:
        async with Topics(broker.bootstrap) as io:
            for service in services:
                await service.start()
                running.append(service)
            await until(lambda: all(len(s.shards) == 1 for s in services), seconds=30)
            run1, run2 = await _two_runs(io, wid, _terminate(wid))
            partition, stored, end = await _stored_and_end(broker.bootstrap, fresh_dsn, wid)
            assert end < stored, "the broker reported the true end: this test needs it to report less"
            owner = next(s for s in services if partition in s.shards)
            survivor = next(s for s in services if s is not owner)
            running.remove(owner)
            await owner.stop()
            await until(lambda: partition in survivor.shards, seconds=30)
            ping = _signal(wid)
            await io.send("SignalWorkflowExecution", ping)
            reply = await io.next("kadence.replies", request_id=ping["request_id"])
            assert reply["ok"] and reply["run_id"] == run2, reply
            assert await _runs(fresh_dsn, wid) == {run1: "Terminated", run2: "Running"}
    finally:
        for service in running:
            await service.stop()
