"""The history service against a real broker and PostgreSQL, driven through Kafka alone."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import subprocess
import sys
from typing import Any

import asyncpg
import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from kadence_protocol import avro
from services.common import db, kafka
from services.common.colocation import LocalFrontend
from services.history import HistoryService, gate, rebuild
from services.history import service as history_service
from services.history.builder import LocalTask
from services.history.errors import ShardOwnershipLost
from services.history.state import MutableState
from services.history.store import HistoryStore
from tests.helpers import elapse, stays

from .history_harness import SHARDS, Topics, history_of, history_running, settings_for, start_record, task_ref, until

pytestmark = pytest.mark.timeout(90)


def _schedule_activity(activity_type: str, **kw: object) -> dict[str, object]:
    attrs = {"activity_id": "1", "activity_type": activity_type, "task_queue": "", "input": '["x"]',
             "schedule_to_close_timeout_ms": 0, "schedule_to_start_timeout_ms": 0,
             "start_to_close_timeout_ms": 5000, "heartbeat_timeout_ms": 0, "retry_policy": None}
    attrs.update(kw)
    return {"command_type": "ScheduleActivityTask", "attributes": attrs}


async def test_workflow_with_one_activity_through_kafka(broker, fresh_dsn) -> None:
    async with history_running(broker.bootstrap, fresh_dsn), Topics(broker.bootstrap) as io:
        start = start_record("wf-1")
        await io.send("StartWorkflowExecution", start)
        reply = await io.next("kadence.replies", request_id=start["request_id"])
        assert reply["ok"] and reply["run_id"]
        wt = await io.next("kadence.tasks", "WorkflowTask", workflow_id="wf-1")
        assert (wt["scheduled_event_id"], wt["first_event_id"]) == (2, 1)

        await io.send("RecordWorkflowTaskStarted", task_ref(wt))
        await io.send("RespondWorkflowTaskCompleted", task_ref(wt) | {"commands": [_schedule_activity("echo")]})
        act = await io.next("kadence.tasks", "ActivityTask", workflow_id="wf-1")
        assert act["activity_type"] == "echo" and act["attempt"] == 1

        await io.send("RecordActivityTaskStarted", task_ref(act))
        await io.send("RespondActivityTaskCompleted", task_ref(act) | {"result": '"hello x"'})
        wt2 = await io.next("kadence.tasks", "WorkflowTask", workflow_id="wf-1")
        assert wt2["first_event_id"] == wt["scheduled_event_id"] + 1

        await io.send("RespondWorkflowTaskCompleted", task_ref(wt2) | {"commands": [
            {"command_type": "CompleteWorkflowExecution", "attributes": {"result": '"done"'}}]})
        # Duplicate start with the same request id gets the same run back, even once closed.
        await io.send("StartWorkflowExecution", start)
        again = await io.next("kadence.replies", request_id=start["request_id"])
        assert again["run_id"] == reply["run_id"]

        events = await history_of(fresh_dsn, reply["run_id"])
        assert [e["event_id"] for e in events] == list(range(1, len(events) + 1))
        assert [e["event_type"] for e in events] == [
            "WorkflowExecutionStarted", "WorkflowTaskScheduled", "WorkflowTaskStarted", "WorkflowTaskCompleted",
            "ActivityTaskScheduled", "ActivityTaskStarted", "ActivityTaskCompleted", "WorkflowTaskScheduled",
            "WorkflowTaskStarted", "WorkflowTaskCompleted", "WorkflowExecutionCompleted"]
        # Each workflow task carried its events, exactly as stored.
        assert [avro.decode(data)[1] for data in wt["events"]] == events[0:2]
        assert [avro.decode(data)[1] for data in wt2["events"]] == events[2:8]
        # One fold: the snapshot equals the state rebuilt from history.
        conn = await asyncpg.connect(fresh_dsn)
        try:
            snapshot = await conn.fetchval("SELECT state FROM executions WHERE run_id = $1", reply["run_id"])
            timers = await conn.fetchval("SELECT count(*) FROM timers")
        finally:
            await conn.close()
        rebuilt = rebuild("default", "wf-1", reply["run_id"], events)
        assert rebuilt.dumps() == MutableState.loads(snapshot).dumps()
        assert json.loads(snapshot)["status"] == "Completed"
        assert timers == 0


async def test_second_start_of_running_workflow_is_refused(broker, fresh_dsn) -> None:
    async with history_running(broker.bootstrap, fresh_dsn), Topics(broker.bootstrap) as io:
        first = start_record("wf-dup")
        await io.send("StartWorkflowExecution", first)
        ok = await io.next("kadence.replies", request_id=first["request_id"])
        other = start_record("wf-dup")
        await io.send("StartWorkflowExecution", other)
        refused = await io.next("kadence.replies", request_id=other["request_id"])
        assert not refused["ok"] and refused["error_type"] == "WorkflowAlreadyStarted"
        assert refused["run_id"] == ok["run_id"]


async def test_a_start_the_shard_takes_for_new_is_checked_at_commit(broker, fresh_dsn) -> None:
    # A start of a workflow the shard's memory does not hold is run as new without a look-up
    # first; the commit finds the run it has and the batch runs again, looked up.
    async with history_running(broker.bootstrap, fresh_dsn) as service, Topics(broker.bootstrap) as io:
        first = start_record("wf-forgotten")
        await io.send("StartWorkflowExecution", first)
        ok = await io.next("kadence.replies", request_id=first["request_id"])
        for shard in service.shards.values():
            shard.current.clear()  # as after eviction: nothing in memory says the workflow has a run
        other = start_record("wf-forgotten")
        await io.send("StartWorkflowExecution", other)
        refused = await io.next("kadence.replies", request_id=other["request_id"])
        assert not refused["ok"] and refused["error_type"] == "WorkflowAlreadyStarted"
        assert refused["run_id"] == ok["run_id"]
        for shard in service.shards.values():
            shard.current.clear()
        await io.send("StartWorkflowExecution", first)  # the same request again: the same run
        again = await io.next("kadence.replies", request_id=first["request_id"])
        assert again["ok"] and again["run_id"] == ok["run_id"]
        conn = await asyncpg.connect(fresh_dsn)
        try:
            runs = await conn.fetch("SELECT run_id FROM executions WHERE workflow_id = 'wf-forgotten'")
            current = await conn.fetchval("SELECT run_id FROM current_executions WHERE workflow_id = 'wf-forgotten'")
        finally:
            await conn.close()
        assert [r["run_id"] for r in runs] == [ok["run_id"]] and current == ok["run_id"]


async def test_activity_retries_with_backoff_then_fails_finally(broker, fresh_dsn) -> None:
    policy = {"initial_interval_ms": 100, "backoff_coefficient": 2.0, "maximum_interval_ms": 0,
              "maximum_attempts": 2, "non_retryable_error_types": []}
    failure = {"message": "boom", "type": "IOError", "stack_trace": "", "non_retryable": False, "details": None}
    async with history_running(broker.bootstrap, fresh_dsn), Topics(broker.bootstrap) as io:
        await io.send("StartWorkflowExecution", start_record("wf-retry"))
        wt = await io.next("kadence.tasks", "WorkflowTask", workflow_id="wf-retry")
        await io.send("RespondWorkflowTaskCompleted", task_ref(wt) | {
            "commands": [_schedule_activity("flaky", retry_policy=policy)]})
        for attempt in (1, 2):
            act = await io.next("kadence.tasks", "ActivityTask", workflow_id="wf-retry")
            assert act["attempt"] == attempt
            await io.send("RespondActivityTaskFailed", task_ref(act) | {"failure": failure})
        wt2 = await io.next("kadence.tasks", "WorkflowTask", workflow_id="wf-retry")
        events = await history_of(fresh_dsn, wt2["run_id"])
        # Only the final attempt writes events: its start (naming the failure before it) and failure.
        failed = [e for e in events if e["event_type"] == "ActivityTaskFailed"]
        assert [f["attributes"]["retry_backoff_ms"] for f in failed] == [None]
        (started,) = [e for e in events if e["event_type"] == "ActivityTaskStarted"]
        assert started["attributes"]["attempt"] == 2 and started["attributes"]["last_failure"] == failure


async def test_undecodable_record_goes_to_dlq_and_partition_keeps_flowing(broker, fresh_dsn) -> None:
    async with history_running(broker.bootstrap, fresh_dsn), Topics(broker.bootstrap) as io:
        key = b"default/wf-dlq"
        await io.send_raw(key, b"\x00garbage bytes")
        start = start_record("wf-dlq")
        await io.send("StartWorkflowExecution", start)
        letter = await io.next("kadence.dlq")
        assert letter["value"] == b"\x00garbage bytes" and "undecodable" in letter["reason"]
        reply = await io.next("kadence.replies", request_id=start["request_id"])
        assert reply["ok"]


async def test_zombie_owner_cannot_commit(broker, fresh_dsn) -> None:
    async with history_running(broker.bootstrap, fresh_dsn) as service, Topics(broker.bootstrap) as io:
        start = start_record("wf-fence")
        await io.send("StartWorkflowExecution", start)
        await io.next("kadence.replies", request_id=start["request_id"])
        shard = next(iter(service.shards.values()))
        store = HistoryStore(service.pool)
        # A new owner takes the shard over: the old owner's range_id is now stale.
        await store.acquire_shard(shard.shard_id, "usurper")
        with pytest.raises(ShardOwnershipLost):
            await store.commit(shard.shard_id, shard.range_id, None, [], [], [], [])


async def test_durable_timer_fires(broker, fresh_dsn) -> None:
    async with history_running(broker.bootstrap, fresh_dsn), Topics(broker.bootstrap) as io:
        await io.send("StartWorkflowExecution", start_record("wf-timer"))
        wt = await io.next("kadence.tasks", "WorkflowTask", workflow_id="wf-timer")
        await io.send("RespondWorkflowTaskCompleted", task_ref(wt) | {"commands": [
            {"command_type": "StartTimer", "attributes": {"timer_id": "t1", "start_to_fire_timeout_ms": 300}}]})
        wt2 = await io.next("kadence.tasks", "WorkflowTask", workflow_id="wf-timer")
        events = await history_of(fresh_dsn, wt2["run_id"])
        started = next(e for e in events if e["event_type"] == "TimerStarted")
        fired = next(e for e in events if e["event_type"] == "TimerFired")
        assert fired["attributes"] == {"timer_id": "t1", "started_event_id": started["event_id"]}
        assert fired["event_time"] - started["event_time"] >= 300


FAST_RETRY = {"initial_interval_ms": 50, "backoff_coefficient": 1.0, "maximum_interval_ms": 0,
              "maximum_attempts": 0, "non_retryable_error_types": []}


async def _first_attempt(io: Topics, workflow_id: str, start_to_close_timeout_ms: int) -> dict[str, object]:
    """Start a workflow whose one activity is retried at once; return the activity's first task."""
    await io.send("StartWorkflowExecution", start_record(workflow_id))
    wt = await io.next("kadence.tasks", "WorkflowTask", workflow_id=workflow_id)
    await io.send("RespondWorkflowTaskCompleted", task_ref(wt) | {"commands": [
        _schedule_activity("slow", start_to_close_timeout_ms=start_to_close_timeout_ms, retry_policy=FAST_RETRY)]})
    return await io.next("kadence.tasks", "ActivityTask", workflow_id=workflow_id)


async def test_activity_start_to_close_timeout_is_retried(broker, fresh_dsn) -> None:
    async with history_running(broker.bootstrap, fresh_dsn), Topics(broker.bootstrap) as io:
        first = await _first_attempt(io, "wf-stc", 300)
        await io.send("RecordActivityTaskStarted", task_ref(first))  # ... and never answers
        second = await io.next("kadence.tasks", "ActivityTask", workflow_id="wf-stc")
        assert second["attempt"] == 2
        # The late answer of the first attempt is stale and changes nothing.
        await io.send("RespondActivityTaskCompleted", task_ref(first) | {"result": '"late"'})
        await io.send("RespondActivityTaskCompleted", task_ref(second) | {"result": '"ok"'})
        wt2 = await io.next("kadence.tasks", "WorkflowTask", workflow_id="wf-stc")
        events = await history_of(fresh_dsn, wt2["run_id"])
        kinds = [e["event_type"] for e in events]
        # The timed-out attempt wrote no event; the completed one names it.
        assert kinds.count("ActivityTaskTimedOut") == 0 and kinds.count("ActivityTaskCompleted") == 1
        started = next(e for e in events if e["event_type"] == "ActivityTaskStarted")
        assert started["attributes"]["attempt"] == 2
        assert started["attributes"]["last_failure"]["type"] == "TimeoutError"
        done = next(e for e in events if e["event_type"] == "ActivityTaskCompleted")
        assert done["attributes"]["result"] == '"ok"'


async def test_a_late_started_record_counts_the_timeout_from_the_hand_out(broker, fresh_dsn) -> None:
    async with history_running(broker.bootstrap, fresh_dsn), Topics(broker.bootstrap) as io:
        first = await _first_attempt(io, "wf-late", 2000)
        # Handed out at once; the frontend held its record back, so it arrives 1.5 s later.
        handed = first["scheduled_time"]
        await elapse(1.5)
        await io.send("RecordActivityTaskStarted", task_ref(first) | {"started_time": handed})
        second = await io.next("kadence.tasks", "ActivityTask", workflow_id="wf-late", timeout=10)
        # The retried attempt wrote no event: the next one is scheduled the backoff after
        # the timeout, which came 2 s from the hand-out, not from when history heard of the start.
        timed_out_at = second["scheduled_time"] - FAST_RETRY["initial_interval_ms"]
        assert 2000 <= timed_out_at - handed < 3000
        assert second["attempt"] == 2


async def test_a_heartbeat_without_a_started_record_implies_the_start(broker, fresh_dsn) -> None:
    async with history_running(broker.bootstrap, fresh_dsn), Topics(broker.bootstrap) as io:
        await io.send("StartWorkflowExecution", start_record("wf-beat"))
        wt = await io.next("kadence.tasks", "WorkflowTask", workflow_id="wf-beat")
        await io.send("RespondWorkflowTaskCompleted", task_ref(wt) | {"commands": [
            _schedule_activity("beating", heartbeat_timeout_ms=60_000)]})
        act = await io.next("kadence.tasks", "ActivityTask", workflow_id="wf-beat")
        await io.send("RecordActivityTaskHeartbeat", task_ref(act) | {"details": '"half"'})
        await io.send("RespondActivityTaskCompleted", task_ref(act) | {"result": '"ok"'})
        await io.next("kadence.tasks", "WorkflowTask", workflow_id="wf-beat")
        kinds = [e["event_type"] for e in await history_of(fresh_dsn, act["run_id"])]
        assert kinds[4:7] == ["ActivityTaskScheduled", "ActivityTaskStarted", "ActivityTaskCompleted"]


def _signal(workflow_id: str, payload: str) -> bytes:
    # No request id: nothing but the offsets keeps a signal from being applied twice.
    return avro.encode("SignalWorkflowExecution", {
        "namespace": "default", "workflow_id": workflow_id, "run_id": None, "signal_name": "s", "input": payload,
        "request_id": "", "identity": "t", "reply_to": ""})


async def _signals_applied(dsn: str, run_id: str) -> list[str]:
    return [e["attributes"]["input"] for e in await history_of(dsn, run_id)
            if e["event_type"] == "WorkflowExecutionSignaled"]


async def test_commands_handed_over_in_process_are_taken_once_and_in_offset_order(broker, fresh_dsn) -> None:
    async with history_running(broker.bootstrap, fresh_dsn) as service, Topics(broker.bootstrap) as io:
        start = start_record("wf-handed")
        await io.send("StartWorkflowExecution", start)
        reply = await io.next("kadence.replies", request_id=start["request_id"])
        wt = await io.next("kadence.tasks", "WorkflowTask", workflow_id="wf-handed")
        await io.send("RespondWorkflowTaskCompleted", task_ref(wt) | {"commands": []})

        key = kafka.workflow_key("default", "wf-handed")
        tp = TopicPartition(kafka.REQUESTS, kafka.partition_for(key, SHARDS))
        service._consumer.pause(tp)  # the fetched copies come only after the hand-overs
        signals = []
        for i in range(3):
            value = _signal("wf-handed", f"[{i}]")
            signals.append((await io.producer.send_and_wait(kafka.REQUESTS, value, key=key), value))
        # Offered out of order and twice: only the partition's next offset is taken.
        for metadata, value in [signals[1], signals[0], signals[0], signals[2], signals[1]]:
            service.take_acked(metadata.partition, metadata.offset, key, value)
        await until(lambda: service.shards[tp.partition].intake.settled())  # the hand-overs taken
        service._consumer.resume(tp)

        async def three_applied() -> bool:
            return len(await _signals_applied(fresh_dsn, reply["run_id"])) >= 3

        await until(three_applied)

        async def each_once() -> bool:  # a copy taken twice would show up
            return await _signals_applied(fresh_dsn, reply["run_id"]) == ["[0]", "[1]", "[2]"]
        await stays(each_once, for_seconds=0.3, what="each signal applied once")


async def test_a_partition_hand_over_serves_is_not_fetched_until_another_producer_writes(
        broker, fresh_dsn, monkeypatch) -> None:
    monkeypatch.setattr(gate, "QUIET_S", 0.05)  # a partition that fetched records may pause soon after
    async with history_running(broker.bootstrap, fresh_dsn) as service, Topics(broker.bootstrap) as io:
        start = start_record("wf-gated")
        await io.send("StartWorkflowExecution", start)  # fetched: nothing is handed over yet
        run_id = (await io.next("kadence.replies", request_id=start["request_id"]))["run_id"]
        key = kafka.workflow_key("default", "wf-gated")
        tp = TopicPartition(kafka.REQUESTS, kafka.partition_for(key, SHARDS))
        # A command handed over, as the frontend in this process does: the shard has then
        # taken everything the broker holds, and the consumer stops fetching the partition.
        value = _signal("wf-gated", "[0]")
        acked = await io.producer.send(kafka.REQUESTS, value, key=key, partition=tp.partition)
        service.take_queued(tp.partition, key, value, (), acked)
        await until(lambda: tp in service._consumer.paused())
        assert tp in service._consumer.paused()
        assert await _signals_applied(fresh_dsn, run_id) == ["[0]"]
        # Another producer's record, which nobody hands over: the gate sees it and fetches.
        await io.producer.send_and_wait(kafka.REQUESTS, _signal("wf-gated", "[1]"), key=key, partition=tp.partition)

        async def both_applied() -> bool:
            return len(await _signals_applied(fresh_dsn, run_id)) >= 2

        await until(both_applied)
        assert await _signals_applied(fresh_dsn, run_id) == ["[0]", "[1]"]
        # Caught up again, and quiet: paused once more.
        await until(lambda: tp in service._consumer.paused())
        assert tp in service._consumer.paused()
        # A command handed over behind another producer's record: the shard asks for the fetch.
        await io.producer.send_and_wait(kafka.REQUESTS, _signal("wf-gated", "[2]"), key=key, partition=tp.partition)
        value = _signal("wf-gated", "[3]")
        acked = await io.producer.send(kafka.REQUESTS, value, key=key, partition=tp.partition)
        service.take_queued(tp.partition, key, value, (), acked)

        async def all_applied() -> bool:
            return len(await _signals_applied(fresh_dsn, run_id)) >= 4

        await until(all_applied)
        assert await _signals_applied(fresh_dsn, run_id) == ["[0]", "[1]", "[2]", "[3]"]


async def _started_and_unfetched(service: Any, io: Topics, workflow_id: str,
                                 monkeypatch: pytest.MonkeyPatch) -> tuple[str, bytes, TopicPartition]:
    """Start a run, then pause the fetch of its partition: its run id, key and partition.

    The fetch gate (which take_queued starts) would resume the partition for a record the
    shard has not taken: it leaves the partition alone while the test holds the fetch."""
    monkeypatch.setattr(gate.FetchGate, "fetch", lambda self, partition: None)
    start = start_record(workflow_id)
    await io.send("StartWorkflowExecution", start)
    run_id = (await io.next("kadence.replies", request_id=start["request_id"]))["run_id"]
    key = kafka.workflow_key("default", workflow_id)
    tp = TopicPartition(kafka.REQUESTS, kafka.partition_for(key, SHARDS))
    service._consumer.pause(tp)
    return str(run_id), key, tp


async def test_a_command_taken_ahead_of_its_acknowledgement_is_applied_once(broker, fresh_dsn, monkeypatch) -> None:
    from services.history import runner

    early: list[int | None] = []  # the offsets the shard learnt for commands it took early
    acknowledged = runner._acknowledged

    async def spy(waiter: asyncio.Future[object]) -> int | None:
        early.append(await acknowledged(waiter))
        return early[-1]

    monkeypatch.setattr(runner, "_acknowledged", spy)
    async with history_running(broker.bootstrap, fresh_dsn) as service, Topics(broker.bootstrap) as io:
        # The fetched copy comes only after the shard took the command early.
        run_id, key, tp = await _started_and_unfetched(service, io, "wf-early", monkeypatch)
        value = _signal("wf-early", "[0]")
        acked = await io.producer.send(kafka.REQUESTS, value, key=key, partition=tp.partition)
        service.take_queued(tp.partition, key, value, (), acked)  # as the frontend in this process does
        offset = (await acked).offset
        await until(lambda: bool(early))
        assert early == [offset]
        await until(lambda: _signals_applied(fresh_dsn, run_id))
        service._consumer.resume(tp)

        async def once() -> bool:  # the acknowledged and the fetched copies are skipped
            return await _signals_applied(fresh_dsn, run_id) == ["[0]"]
        await stays(once, for_seconds=0.5, what="the signal applied once")
        events = await history_of(fresh_dsn, run_id)
        assert [e["event_id"] for e in events] == list(range(1, len(events) + 1))


async def test_a_command_taken_early_gives_way_to_a_record_ahead_of_it(broker, fresh_dsn, monkeypatch) -> None:
    async with history_running(broker.bootstrap, fresh_dsn) as service, Topics(broker.bootstrap) as io:
        run_id, key, tp = await _started_and_unfetched(service, io, "wf-behind", monkeypatch)
        # Another producer's record, which history in this process is not handed ...
        await io.producer.send_and_wait(kafka.REQUESTS, _signal("wf-behind", "[0]"), key=key, partition=tp.partition)
        # ... is ahead of the one taken early, which therefore waits for the fetch.
        value = _signal("wf-behind", "[1]")
        acked = await io.producer.send(kafka.REQUESTS, value, key=key, partition=tp.partition)
        service.take_queued(tp.partition, key, value, (), acked)
        await acked
        # And a command the broker refused is never applied.
        refused: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        service.take_queued(tp.partition, key, _signal("wf-behind", "[2]"), (), refused)
        refused.set_exception(KafkaError("refused"))

        async def none_applied() -> bool:
            return await _signals_applied(fresh_dsn, run_id) == []
        await stays(none_applied, for_seconds=0.5, what="nothing applied before the fetch")
        service._consumer.resume(tp)

        async def two_applied() -> bool:
            return len(await _signals_applied(fresh_dsn, run_id)) >= 2

        await until(two_applied)

        async def in_order_never_the_refused() -> bool:
            return await _signals_applied(fresh_dsn, run_id) == ["[0]", "[1]"]
        await stays(in_order_never_the_refused, for_seconds=0.3, what="the two in order, never the refused one")


async def test_a_timer_runs_from_when_history_records_it(broker, fresh_dsn) -> None:
    async with history_running(broker.bootstrap, fresh_dsn), Topics(broker.bootstrap) as io:
        await io.send("StartWorkflowExecution", start_record("wf-sleep"))
        wt = await io.next("kadence.tasks", "WorkflowTask", workflow_id="wf-sleep")
        handed = wt["scheduled_time"]  # the worker's now() in this task
        await elapse(0.6)  # the task takes a while to answer: the code called sleep late
        await io.send("RespondWorkflowTaskCompleted", task_ref(wt) | {"started_time": handed, "commands": [
            {"command_type": "StartTimer", "attributes": {"timer_id": "t1", "start_to_fire_timeout_ms": 1000}}]})
        await io.next("kadence.tasks", "WorkflowTask", workflow_id="wf-sleep", timeout=10)
        events = await history_of(fresh_dsn, wt["run_id"])
        started = next(e for e in events if e["event_type"] == "TimerStarted")
        fired = next(e for e in events if e["event_type"] == "TimerFired")
        assert started["event_time"] - handed >= 600
        # A full second after history heard of the timer, so never early for the code that slept.
        assert 1000 <= fired["event_time"] - started["event_time"] < 1400


async def test_replies_and_closes_for_this_process_skip_the_broker(broker, fresh_dsn) -> None:
    replies: list[dict[str, object]] = []
    closed: list[tuple[str, dict[str, object]]] = []
    class Here:
        instance_id = "here"

        def take_replies(self, taken: list[dict[str, object]]) -> None:
            replies.extend(taken)

        def take_closed(self, runs: list[tuple[str, dict[str, object]]]) -> None:
            closed.extend(runs)

    async with history_running(broker.bootstrap, fresh_dsn, replies=LocalFrontend(Here())), \
            Topics(broker.bootstrap) as io:
        local, remote = start_record("wf-local", reply_to="here"), start_record("wf-remote")
        await io.send("StartWorkflowExecution", local)
        await io.send("StartWorkflowExecution", remote)
        assert (await io.next("kadence.replies", request_id=remote["request_id"]))["ok"]
        await until(lambda: bool(replies))  # the two workflows may be on different shards
        assert [r["request_id"] for r in replies] == [local["request_id"]] and replies[0]["ok"]
        with pytest.raises(TimeoutError):  # the local reply was never published
            await io.next("kadence.replies", request_id=local["request_id"], timeout=1.0)
        wt = await io.next("kadence.tasks", "WorkflowTask", workflow_id="wf-local")
        await io.send("RespondWorkflowTaskCompleted", task_ref(wt) | {"commands": [
            {"command_type": "CompleteWorkflowExecution", "attributes": {"result": '"done"'}}]})
        await until(lambda: bool(closed))
        assert closed == [(wt["run_id"], {"status": "Completed", "run_id": wt["run_id"], "result": '"done"'})]


async def test_tasks_for_matching_in_this_process_are_handed_over_and_not_published(broker, fresh_dsn) -> None:
    handed: list[LocalTask] = []  # what matching in this process is handed after each commit
    async with history_running(broker.bootstrap, fresh_dsn, local_tasks=handed.extend), \
            Topics(broker.bootstrap) as io:
        await io.send("StartWorkflowExecution", start_record("wf-local-tasks"))

        async def next_task() -> LocalTask:
            await until(lambda: bool(handed), every=0.05)
            if not handed:
                raise AssertionError("no task handed over")
            return handed.pop(0)

        wt = await next_task()
        await io.send("RespondWorkflowTaskCompleted", task_ref(wt.record) | {"commands": [_schedule_activity("echo")]})
        act = await next_task()
        assert (act.name, act.record["activity_type"]) == ("ActivityTask", "echo")
        await io.send("RespondActivityTaskCompleted", task_ref(act.record) | {"result": '"x"'})
        wt2 = await next_task()
        events = await history_of(fresh_dsn, wt.record["run_id"])
        # The records are what would have been published; the events come decoded too.
        assert wt.name == "WorkflowTask" and [avro.decode(d)[1] for d in wt.record["events"]] == events[0:2]
        assert wt.events is not None and list(wt.events) == events[0:2]
        assert wt2.events is not None and list(wt2.events) == events[2:8]
        avro.encode(wt.name, wt.record)  # a valid record, for the backlog if a poll gives it back
        with pytest.raises(TimeoutError):  # and none of them was published
            await io.next("kadence.tasks", workflow_id="wf-local-tasks", timeout=1.0)


async def test_a_new_owner_publishes_the_pending_outbox_of_both_layouts(broker, fresh_dsn) -> None:
    await db.migrate(fresh_dsn)

    def reply(request_id: str) -> bytes:
        return avro.encode("Reply", {"reply_to": "tester", "request_id": request_id, "ok": True, "run_id": "r",
                                     "error_type": None, "error_message": None, "namespace": "default",
                                     "workflow_id": "wf"})

    conn = await asyncpg.connect(fresh_dsn)
    try:
        # Committed but never published: a row of the table of before migration 0004, then a batch.
        await conn.execute("INSERT INTO outbox VALUES (0, 7, 'kadence.replies', 'tester', $1, NULL)", reply("old"))
        await conn.execute("INSERT INTO outbox_batches VALUES (0, 8, $1, $2, $3, $4)",
                           ["kadence.replies", "kadence.replies"], [b"tester", b"tester"],
                           [reply("new-1"), reply("new-2")], [None, None])
    finally:
        await conn.close()
    async with history_running(broker.bootstrap, fresh_dsn) as service, Topics(broker.bootstrap) as io:
        for request_id in ("old", "new-1", "new-2"):
            assert (await io.next("kadence.replies", request_id=request_id))["ok"]
        assert service.shards[0].relay.next_outbox_id == 9
        conn = await asyncpg.connect(fresh_dsn)
        try:
            async def left() -> int:
                return int(await conn.fetchval(
                    "SELECT (SELECT count(*) FROM outbox) + (SELECT count(*) FROM outbox_batches)"))

            async def drained() -> bool:
                return await left() == 0

            await until(drained)
            assert await left() == 0
        finally:
            await conn.close()



async def test_a_workflow_task_run_ahead_is_recorded_only_if_history_would_have_handed_it_out(
        broker, fresh_dsn) -> None:
    complete = {"command_type": "CompleteWorkflowExecution", "attributes": {"result": '"done"'}}
    async with history_running(broker.bootstrap, fresh_dsn), Topics(broker.bootstrap) as io:
        await io.send("StartWorkflowExecution", start_record("wf-ahead"))
        wt = await io.next("kadence.tasks", "WorkflowTask", workflow_id="wf-ahead")
        handed = wt["scheduled_time"] + 5
        await io.send("RespondWorkflowTaskCompleted", task_ref(wt) | {"started_time": handed, "commands": [
            _schedule_activity("first", activity_id="1"), _schedule_activity("second", activity_id="2")]})
        first = await io.next("kadence.tasks", "ActivityTask", workflow_id="wf-ahead", activity_id="1")
        second = await io.next("kadence.tasks", "ActivityTask", workflow_id="wf-ahead", activity_id="2")

        # Run ahead on a task other than the one history completed (another start): refused,
        # the result is recorded and the workflow task handed out as usual.
        ahead = {"after_scheduled_event_id": wt["scheduled_event_id"], "after_started_time": handed + 1,
                 "started_time": handed + 10, "ahead_id": 1, "commands": [complete]}
        await io.send("RespondActivityTaskCompleted", task_ref(first) | {"result": '"1"', "workflow_task": ahead})
        wt2 = await io.next("kadence.tasks", "WorkflowTask", workflow_id="wf-ahead")
        assert wt2["first_event_id"] == wt["scheduled_event_id"] + 1
        handed2 = wt2["scheduled_time"] + 1
        await io.send("RespondWorkflowTaskCompleted", task_ref(wt2) | {"started_time": handed2, "commands": []})
        await until(lambda: _last_type(fresh_dsn, wt["run_id"], "WorkflowTaskCompleted"))

        # On the task history completed last, with nothing else owed: recorded as run.
        ahead = {"after_scheduled_event_id": wt2["scheduled_event_id"], "after_started_time": handed2,
                 "started_time": handed2 + 1, "ahead_id": 101,
                 "commands": [_schedule_activity("third", activity_id="3")]}
        await io.send("RespondActivityTaskCompleted", task_ref(second) | {"result": '"2"', "workflow_task": ahead})
        third = await io.next("kadence.tasks", "ActivityTask", workflow_id="wf-ahead", activity_id="3")
        # And on that task run ahead, named by its id: recorded too.
        handed3 = third["scheduled_time"] + 1  # when the worker ran it: after the activity it waited for
        ahead = {"after_ahead_id": 101, "after_started_time": handed2 + 1, "started_time": handed3,
                 "ahead_id": 202, "commands": [complete]}
        await io.send("RespondActivityTaskCompleted", task_ref(third) | {"result": '"3"', "workflow_task": ahead})
        await until(lambda: _last_type(fresh_dsn, wt["run_id"], "WorkflowExecutionCompleted"))

        events = await history_of(fresh_dsn, wt["run_id"])
        kinds = [e["event_type"] for e in events]
        assert kinds.count("WorkflowExecutionCompleted") == 1  # the refused task's commands were dropped
        assert kinds[-6:] == ["ActivityTaskStarted", "ActivityTaskCompleted", "WorkflowTaskScheduled",
                              "WorkflowTaskStarted", "WorkflowTaskCompleted", "WorkflowExecutionCompleted"]
        started = [e["attributes"] for e in events if e["event_type"] == "WorkflowTaskStarted"]
        assert [(s["ran_ahead_id"], s["started_time"]) for s in started] == [
            (0, handed), (0, handed2), (101, handed2 + 1), (202, handed3)]
        conn = await asyncpg.connect(fresh_dsn)
        try:
            snapshot = await conn.fetchval("SELECT state FROM executions WHERE run_id = $1", wt["run_id"])
        finally:
            await conn.close()
        assert rebuild("default", "wf-ahead", wt["run_id"], events).dumps() == MutableState.loads(snapshot).dumps()


async def _last_type(dsn: str, run_id: str, event_type: str) -> bool:
    events = await history_of(dsn, run_id)
    return bool(events) and events[-1]["event_type"] == event_type


async def test_partitions_assigned_while_the_service_stops_start_no_shard(broker, fresh_dsn) -> None:
    # A rebalance can finish while the service stops; a shard it started then would outlive
    # the service's pool (and fail in its timer processor, unobserved).
    async with history_running(broker.bootstrap, fresh_dsn) as service:
        await until(lambda: len(service.shards) == SHARDS, seconds=10)
        assert len(service.shards) == SHARDS
        stopping = asyncio.create_task(service.stop())
        await until(lambda: not service.shards, seconds=10)  # the stop has released the shards
        await service._acquire(list(range(SHARDS)))
        await stopping
        assert service.shards == {}


async def test_a_snapshot_of_an_earlier_build_is_rebuilt_from_history_when_loaded(broker, fresh_dsn) -> None:
    # Fields the fold gained since a snapshot was written cannot take their defaults: a run in
    # flight across an upgrade would then differ from its history's fold (and refuse, say, a
    # task run ahead on its last task for want of that task's start).
    newer = ("last_completed_wt_started_time", "last_completed_wt_ahead_id", "carry_from")
    async with history_running(broker.bootstrap, fresh_dsn) as service, Topics(broker.bootstrap) as io:
        await io.send("StartWorkflowExecution", start_record("wf-old"))
        wt = await io.next("kadence.tasks", "WorkflowTask", workflow_id="wf-old")
        await io.send("RespondWorkflowTaskCompleted", task_ref(wt) | {
            "started_time": wt["scheduled_time"] + 3, "commands": [_schedule_activity("echo")]})
        await io.next("kadence.tasks", "ActivityTask", workflow_id="wf-old")
        conn = await asyncpg.connect(fresh_dsn)
        try:
            data = await conn.fetchval("SELECT state FROM executions WHERE run_id = $1", wt["run_id"])
            old = {k: v for k, v in json.loads(data).items() if k not in newer}
            await conn.execute("UPDATE executions SET state = $2 WHERE run_id = $1", wt["run_id"], json.dumps(old).encode())
        finally:
            await conn.close()
        loaded = await HistoryStore(service.pool).load_state(wt["run_id"])
        assert loaded is not None
        assert loaded.last_completed_wt_started_time == wt["scheduled_time"] + 3
        assert loaded.carry_from == wt["scheduled_event_id"] + 1
        events = await history_of(fresh_dsn, wt["run_id"])
        assert loaded.dumps() == rebuild("default", "wf-old", wt["run_id"], events).dumps()


async def test_history_refuses_a_shard_count_other_than_the_clusters(broker, fresh_dsn) -> None:
    async with history_running(broker.bootstrap, fresh_dsn):
        pass  # the cluster records its shard count
    other = HistoryService(dataclasses.replace(settings_for(broker.bootstrap, fresh_dsn), shards=SHARDS + 2))
    with pytest.raises(db.ClusterMismatch, match=f"shards = {SHARDS}, not {SHARDS + 2}.*KADENCE_SHARDS"):
        await other.start()
    assert other.pool is None  # its own pool closed again
    # As a process of its own it stops with that message, not a traceback.
    env = {**os.environ, "KADENCE_KAFKA_BOOTSTRAP": broker.bootstrap, "KADENCE_DATABASE_URL": fresh_dsn,
           "KADENCE_SHARDS": str(SHARDS + 2)}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "services.history", env=env,
                                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                stderr=subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    assert err.decode().strip().endswith(f"history: this cluster was created with shards = {SHARDS}, not {SHARDS + 2}"
                                         " (history shards = kadence.requests partitions, fixed when the cluster was"
                                         " created: set KADENCE_SHARDS to the recorded count)")
    async with history_running(broker.bootstrap, fresh_dsn) as service:  # the recorded count still starts
        await until(lambda: len(service.shards) == SHARDS)


async def test_a_cluster_of_an_earlier_build_records_the_shards_it_has_acquired(fresh_dsn) -> None:
    every = sorted(path.stem for path in db.migrations_dir().glob("*.sql"))
    conn = await asyncpg.connect(fresh_dsn)
    try:
        # Migrations up to 0004 applied and three shards acquired, then this build's migrations.
        await conn.execute("CREATE TABLE schema_migrations (version text PRIMARY KEY,"
                           " applied_at timestamptz NOT NULL DEFAULT now())")
        for path in sorted(db.migrations_dir().glob("*.sql")):
            if path.stem < "0005":
                await conn.execute(path.read_text())
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", path.stem)
        await conn.execute("INSERT INTO shards (shard_id, range_id, kafka_offset, owner)"
                           " SELECT i, 1, 0, 'old' FROM generate_series(0, 2) AS i")
        assert await db.migrate(fresh_dsn) == [v for v in every if v >= "0005"]
        assert await db.cluster_setting(conn, "shards") == "3"
    finally:
        await conn.close()


async def test_a_start_waiting_for_its_consumer_groups_join_says_so(broker, fresh_dsn, monkeypatch,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """aiokafka retries a group join quietly and the start waits for it without end: a start
    that hung there said nothing at all. The broker answers the first join after about 1 s."""
    monkeypatch.setattr(history_service, "JOIN_REPORT_S", 0.2)
    caplog.set_level(logging.WARNING, logger=history_service.__name__)
    async with history_running(broker.bootstrap, fresh_dsn) as service:
        assert service._consumer is not None and service._consumer.assignment()
    said = [r.getMessage() for r in caplog.records if r.name == history_service.__name__]
    assert said and said[0] == ("history: the broker has not answered consumer group kadence-history's join yet;"
                                " the start waits for its partitions (0.2 s)"), said
