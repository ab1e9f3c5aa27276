"""Starts of one workflow id that history takes in one batch: each policy ends with one
running run. A batch's new run was remembered before its start event, so it did not become
the id's current run until the commit: a second start in the batch saw the run it replaced,
closed, and started another beside it (two, then six running runs of one workflow id)."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from services.common import kafka
from services.common.embedded import EmbeddedBroker

from .history_harness import SHARDS, Topics, history_running, start_record, task_ref

pytestmark = pytest.mark.timeout(60)


async def _statuses(dsn: str, workflow_id: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT status FROM executions WHERE workflow_id = $1", workflow_id)
    finally:
        await conn.close()
    return sorted(str(r["status"]) for r in rows)


async def test_starts_of_one_id_in_one_batch_leave_one_running_run(broker: EmbeddedBroker, fresh_dsn: str) -> None:
    tag = uuid.uuid4().hex[:8]
    terminating, reused = f"te-{tag}", f"re-{tag}"
    await kafka.ensure_topics(broker.bootstrap, SHARDS, 2)  # before producing: the keys' partitions
    async with Topics(broker.bootstrap) as io:
        # Produced before history runs, so that it takes them all in one batch.
        replacing = [start_record(terminating, id_conflict_policy="TerminateExisting") for _ in range(6)]
        for record in replacing:
            await io.send("StartWorkflowExecution", record)
        first, second, third = (start_record(reused) for _ in range(3))
        await io.send("StartWorkflowExecution", first)
        await io.send("TerminateWorkflowExecution", {
            "namespace": "default", "workflow_id": reused, "run_id": None, "reason": "closed", "request_id": "",
            "identity": "test", "reply_to": None})
        await io.send("StartWorkflowExecution", second)  # the id's last run is closed: a new run
        await io.send("StartWorkflowExecution", third)  # that one runs: refused
        async with history_running(broker.bootstrap, fresh_dsn):
            replies = [await io.next(kafka.REPLIES, request_id=r["request_id"]) for r in replacing]
            assert all(r["ok"] for r in replies) and len({r["run_id"] for r in replies}) == 6
            assert await _statuses(fresh_dsn, terminating) == ["Running"] + ["Terminated"] * 5
            started = await io.next(kafka.REPLIES, request_id=second["request_id"])
            refused = await io.next(kafka.REPLIES, request_id=third["request_id"])
            assert started["ok"] and (refused["ok"], refused["error_type"]) == (False, "WorkflowAlreadyStarted")
            assert refused["run_id"] == started["run_id"]
            assert await _statuses(fresh_dsn, reused) == ["Running", "Terminated"]


async def test_a_signal_in_the_batch_of_a_continue_as_new_reaches_the_new_run(
        broker: EmbeddedBroker, fresh_dsn: str) -> None:
    """The new run of a continue-as-new was not current until the commit either: a signal
    without run_id after it in the same batch found the closed run and was refused
    (WorkflowNotFound: no open run to signal) though the workflow went on."""
    wid = f"can-{uuid.uuid4().hex[:8]}"
    await kafka.ensure_topics(broker.bootstrap, SHARDS, 2)
    async with Topics(broker.bootstrap) as io:
        start = start_record(wid)
        async with history_running(broker.bootstrap, fresh_dsn):
            await io.send("StartWorkflowExecution", start)
            first = (await io.next(kafka.REPLIES, request_id=start["request_id"]))["run_id"]
            task = await io.next(kafka.TASKS, "WorkflowTask", workflow_id=wid)
        # History stopped: the next one takes these three in one batch.
        await io.send("RecordWorkflowTaskStarted", task_ref(task))
        await io.send("RespondWorkflowTaskCompleted", task_ref(task) | {"commands": [
            {"command_type": "ContinueAsNewWorkflowExecution",
             "attributes": {"workflow_type": "", "task_queue": "", "input": '["again"]'}}]})
        signal = {"namespace": "default", "workflow_id": wid, "run_id": None, "signal_name": "poke", "input": None,
                  "request_id": uuid.uuid4().hex, "identity": "test", "reply_to": "tester"}
        await io.send("SignalWorkflowExecution", signal)
        async with history_running(broker.bootstrap, fresh_dsn):
            reply = await io.next(kafka.REPLIES, request_id=signal["request_id"])
            assert reply["ok"] and reply["run_id"] not in (None, first), reply
            assert await _statuses(fresh_dsn, wid) == ["ContinuedAsNew", "Running"]
