"""A command produced straight to kadence.requests without reply_to that history refuses is
dead-lettered naming the refusal (services/history/refusals.py): bad input loses nothing on
the Kafka way in either. The partition goes on, and a redrive once the cause is fixed
applies it. With reply_to the sender gets the Reply instead; a child's refused start
(history's own command) goes back to its parent, not to the DLQ."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from kadence import Client
from kadence_protocol import avro
from services.common import dlq as dead_letters
from services.common import kafka
from services.common.embedded import EmbeddedBroker
from tests.helpers import eventually

from .history_harness import Topics, history_of, history_running, start_record
from .test_child_workflows import QUEUE, Clasher, Doubler, _ids_on_two_shards, _worker

pytestmark = pytest.mark.timeout(120)


def _signal(wid: str, **kw: Any) -> dict[str, Any]:
    cmd = {"namespace": "default", "workflow_id": wid, "run_id": None, "signal_name": "go", "input": '["x"]',
           "request_id": uuid.uuid4().hex, "identity": "kcat", "reply_to": None}
    cmd.update(kw)
    return cmd


async def _letters(bootstrap: str, key: bytes) -> list[dead_letters.DeadLetterEntry]:
    return [e for e in await dead_letters.list_dead_letters(bootstrap) if e.key == key]


async def _started(io: Topics) -> tuple[str, bytes, dict[str, Any]]:
    """A workflow started over Kafka (with reply_to, answered created): its id, key and start."""
    wid = f"refused-{uuid.uuid4().hex[:8]}"
    start = start_record(wid)
    await io.send("StartWorkflowExecution", start)
    assert (await io.next(kafka.REPLIES, request_id=start["request_id"]))["created"]
    return wid, kafka.workflow_key("default", wid), start


async def test_a_signal_to_no_workflow_is_dead_lettered_the_partition_goes_on_and_redrive_delivers_it(
        broker: EmbeddedBroker, fresh_dsn: str) -> None:
    bootstrap = broker.bootstrap
    async with history_running(bootstrap, fresh_dsn), Topics(bootstrap) as io:
        wid = f"refused-{uuid.uuid4().hex[:8]}"
        key = kafka.workflow_key("default", wid)
        signal = _signal(wid)
        await io.send("SignalWorkflowExecution", signal)
        letter = await io.next(kafka.DLQ, "DeadLetter", key=key)
        assert letter["reason"].startswith("SignalWorkflowExecution refused: WorkflowNotFound: ")
        assert repr(wid) in letter["reason"]
        assert letter["value"] == avro.encode("SignalWorkflowExecution", signal)
        assert letter["source_topic"] == kafka.REQUESTS
        assert letter["partition"] == kafka.partition_for(key, 2) and letter["offset"] >= 0

        # The partition goes on: the next record for the same workflow applies.
        start = start_record(wid)
        await io.send("StartWorkflowExecution", start)
        reply = await io.next(kafka.REPLIES, request_id=start["request_id"])
        assert reply["ok"] and reply["created"]

        # The cause fixed (the workflow started), a redrive delivers the signal.
        [entry] = await _letters(bootstrap, key)
        assert (entry.partition, entry.offset) == (letter["partition"], letter["offset"])
        await dead_letters.redrive(bootstrap, offsets={entry.dlq_offset})

        async def signaled() -> bool:
            events = await history_of(fresh_dsn, reply["run_id"])
            return any(e["event_type"] == "WorkflowExecutionSignaled"
                       and e["attributes"]["request_id"] == signal["request_id"] for e in events)
        await eventually(signaled, what="the redriven signal applied")
        assert len(await _letters(bootstrap, key)) == 1  # applied, not refused again


async def test_a_refused_start_is_dead_lettered_and_with_reply_to_a_refusal_is_only_replied(
        broker: EmbeddedBroker, fresh_dsn: str) -> None:
    bootstrap = broker.bootstrap
    async with history_running(bootstrap, fresh_dsn), Topics(bootstrap) as io:
        wid, key, first = await _started(io)

        # With reply_to: a Reply says no, and nothing is dead-lettered.
        answered = start_record(wid)
        await io.send("StartWorkflowExecution", answered)
        reply = await io.next(kafka.REPLIES, request_id=answered["request_id"])
        assert not reply["ok"] and reply["error_type"] == "WorkflowAlreadyStarted"
        # A retried start (same request id, no reply_to) is answered as applied: no dead letter either.
        await io.send("StartWorkflowExecution", {**first, "reply_to": None})

        unanswered = start_record(wid, reply_to=None)
        await io.send("StartWorkflowExecution", unanswered)
        letter = await io.next(kafka.DLQ, "DeadLetter", key=key)
        assert letter["reason"].startswith("StartWorkflowExecution refused: WorkflowAlreadyStarted: ")
        assert letter["value"] == avro.encode("StartWorkflowExecution", unanswered)
        # Published in commit order: the only letter for this workflow is the last command's.
        assert [e.value for e in await _letters(bootstrap, key)] == [letter["value"]]


async def test_a_child_s_refused_start_reaches_its_parent_not_the_dlq(client: Client, cluster: Any) -> None:
    parent_id, child_id = _ids_on_two_shards()
    async with _worker(client):
        await client.start_workflow(Doubler.run, 1, id=child_id, task_queue=QUEUE)
        result = await client.execute_workflow(Clasher.run, child_id, id=parent_id, task_queue=QUEUE)
    assert result == f"{child_id}: WorkflowAlreadyStarted"
    assert await _letters(cluster.settings.kafka_bootstrap, kafka.workflow_key("default", child_id)) == []


async def test_a_cancel_and_a_terminate_of_a_closed_run_are_dead_lettered_in_order(
        broker: EmbeddedBroker, fresh_dsn: str) -> None:
    bootstrap = broker.bootstrap
    async with history_running(bootstrap, fresh_dsn), Topics(bootstrap) as io:
        wid, key, _ = await _started(io)
        ask = {"namespace": "default", "workflow_id": wid, "run_id": None, "reason": "r", "identity": "kcat"}
        terminate = {**ask, "request_id": "t1", "reply_to": "tester"}
        await io.send("TerminateWorkflowExecution", terminate)
        assert (await io.next(kafka.REPLIES, request_id="t1"))["ok"]
        for name, request_id in (("RequestCancelWorkflowExecution", "c1"), ("TerminateWorkflowExecution", "t2")):
            await io.send(name, {**ask, "request_id": request_id, "reply_to": None})
        cancel = await io.next(kafka.DLQ, "DeadLetter", key=key)
        assert cancel["reason"].startswith("RequestCancelWorkflowExecution refused: WorkflowNotFound: workflow ")
        assert "is already closed (Terminated): nothing to cancel" in cancel["reason"]
        again = await io.next(kafka.DLQ, "DeadLetter", key=key)
        assert again["reason"].startswith("TerminateWorkflowExecution refused: WorkflowNotFound: ")
        assert again["offset"] == cancel["offset"] + 1


async def test_a_signal_or_terminate_naming_a_closed_run_says_that_run_is_closed(
        broker: EmbeddedBroker, fresh_dsn: str) -> None:
    """With a run id, the refusal said the workflow 'has no open run', while its next run was
    open: it now names the run and how it closed (or that there is no such run)."""
    bootstrap = broker.bootstrap
    async with history_running(bootstrap, fresh_dsn), Topics(bootstrap) as io:
        wid = f"closed-{uuid.uuid4().hex[:8]}"
        start = start_record(wid)
        await io.send("StartWorkflowExecution", start)
        first = (await io.next(kafka.REPLIES, request_id=start["request_id"]))["run_id"]
        ask = {"namespace": "default", "workflow_id": wid, "reason": "r", "identity": "kcat", "reply_to": "tester"}
        await io.send("TerminateWorkflowExecution", {**ask, "run_id": None, "request_id": "t1"})
        assert (await io.next(kafka.REPLIES, request_id="t1"))["ok"]
        again = start_record(wid)
        await io.send("StartWorkflowExecution", again)
        assert (await io.next(kafka.REPLIES, request_id=again["request_id"]))["created"]  # open: the next run
        for name, cmd in (("SignalWorkflowExecution", _signal(wid, run_id=first, reply_to="tester", request_id="s1")),
                          ("TerminateWorkflowExecution", {**ask, "run_id": first, "request_id": "t2"})):
            await io.send(name, cmd)
            reply = await io.next(kafka.REPLIES, request_id=cmd["request_id"])
            assert reply["error_type"] == "WorkflowNotFound"
            assert f"run {first} is closed (Terminated)" in reply["error_message"], reply
        await io.send("SignalWorkflowExecution", _signal(wid, run_id="nope", reply_to="tester", request_id="s2"))
        reply = await io.next(kafka.REPLIES, request_id="s2")
        assert "has no run nope" in reply["error_message"], reply
