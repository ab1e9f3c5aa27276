"""Updates end to end on the real broker and PostgreSQL: an update returns its handler's
value; a validator's rejection leaves no event and reaches the caller; an update while the
workflow waits on a timer; an update racing the workflow's completion is applied or refused,
never lost; a repeated update id runs once; over Kafka; and the audit replays and verifies
runs with the update events, as the SDK's Replayer does."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from kadence import Client, Replayer, Worker, workflow
from kadence import kafka as ingress
from kadence.exceptions import (
    ApplicationError,
    RPCError,
    WorkflowAlreadyClosedError,
    WorkflowNotFoundError,
    WorkflowUpdateFailedError,
)
from services.cluster import Cluster
from services.history.audit import audit
from tests.helpers import eventually

from .test_audit import _published


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    """This module's tests share one cluster (tests/e2e/conftest.py module_cluster)."""
    return module_cluster


pytestmark = pytest.mark.timeout(120)
QUEUE = "q-update"


@workflow.defn
class Cart:
    def __init__(self) -> None:
        self.items: list[str] = []
        self.checked_out = False

    @workflow.run
    async def run(self) -> list[str]:
        await workflow.wait_condition(lambda: self.checked_out)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.items

    @workflow.update
    def add(self, item: str) -> int:
        self.items.append(item)
        return len(self.items)

    @add.validator  # type: ignore[attr-defined]
    def check_add(self, item: str) -> None:
        if not item:
            raise ApplicationError("an item needs a name", type="EmptyItem")

    @workflow.update
    async def add_later(self, item: str) -> int:
        await workflow.sleep(timedelta(seconds=1))
        self.items.append(item)
        return len(self.items)

    @workflow.update
    def checkout(self) -> int:
        self.checked_out = True
        return len(self.items)


@workflow.defn
class Sleeper:
    """Waits on a timer; an update meanwhile runs and the timer keeps going."""

    def __init__(self) -> None:
        self.pokes = 0

    @workflow.run
    async def run(self) -> int:
        await workflow.sleep(timedelta(seconds=3))
        return self.pokes

    @workflow.update
    def poke(self) -> int:
        self.pokes += 1
        return self.pokes


@workflow.defn
class Quick:
    """Closes as soon as it runs: updates sent meanwhile race its completion."""

    def __init__(self) -> None:
        self.seen = 0

    @workflow.run
    async def run(self) -> str:
        return "done"

    @workflow.update
    def bump(self) -> int:
        self.seen += 1
        return self.seen


@workflow.defn
class Impatient:
    """Returns once told to, without waiting for running update handlers."""

    def __init__(self) -> None:
        self.go = False

    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: self.go)
        return "left"

    @workflow.update
    async def slow(self) -> str:
        await workflow.sleep(timedelta(minutes=10))
        return "never"

    @workflow.signal
    def leave(self) -> None:
        self.go = True


def _worker(client: Client) -> Worker:
    return Worker(client, task_queue=QUEUE, workflows=[Cart, Sleeper, Quick, Impatient])


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def _kinds(client: Client, wid: str) -> list[str]:
    return [e["event_type"] for e in await client.get_workflow_handle(wid).history()]


async def test_an_update_returns_its_value_and_a_rejected_one_leaves_no_event(cluster: Cluster,
                                                                              client: Client) -> None:
    wid = _id("update-cart")
    async with _worker(client):
        handle = await client.start_workflow(Cart.run, id=wid, task_queue=QUEUE)
        assert await handle.execute_update(Cart.add, "apple") == 1
        before = await _kinds(client, wid)
        with pytest.raises(WorkflowUpdateFailedError) as rejected:
            await handle.execute_update(Cart.add, "")
        assert rejected.value.rejected
        assert isinstance(rejected.value.cause, ApplicationError)
        assert rejected.value.cause.type == "EmptyItem" and rejected.value.cause.message == "an item needs a name"
        after = await _kinds(client, wid)
        assert [k for k in after[len(before):] if "Update" in k] == []  # the rejection wrote no update event
        # An update started, then awaited through its handle.
        later = await handle.start_update(Cart.add_later, "pear")
        assert await later.result(timeout=30) == 2
        assert await handle.execute_update("checkout") == 2
        assert await handle.result(timeout=30) == ["apple", "pear"]
    kinds = await _kinds(client, wid)
    assert kinds.count("WorkflowExecutionUpdateAccepted") == 3
    assert kinds.count("WorkflowExecutionUpdateCompleted") == 3
    accepted = [e for e in await handle.history() if e["event_type"] == "WorkflowExecutionUpdateAccepted"]
    assert accepted[0]["attributes"]["update_name"] == "add" and json.loads(accepted[0]["attributes"]["input"]) == [
        "apple"]

    # The SDK's Replayer runs the handlers again from the accepted events, deterministically.
    assert Replayer(workflows=[Cart]).replay(await handle.history()) == []
    # The audit folds the new events and verifies their hash chain.
    await _published(cluster)
    report = await audit(cluster.settings.kafka_bootstrap, cluster.settings.database_url)
    assert report.clean, [str(d) for d in report.divergences]


async def test_an_update_while_the_workflow_waits_on_a_timer(client: Client) -> None:
    wid = _id("update-timer")
    async with _worker(client):
        handle = await client.start_workflow(Sleeper.run, id=wid, task_queue=QUEUE)
        await eventually(lambda: _has(client, wid, "TimerStarted"), timeout=20, what="the timer")
        assert await handle.execute_update(Sleeper.poke) == 1
        assert await handle.execute_update(Sleeper.poke) == 2
        assert await handle.result(timeout=30) == 2
    kinds = await _kinds(client, wid)
    assert kinds.index("WorkflowExecutionUpdateCompleted") < kinds.index("TimerFired")


async def test_a_repeated_update_id_runs_once_and_answers_the_same(client: Client) -> None:
    wid = _id("update-dedupe")
    async with _worker(client):
        handle = await client.start_workflow(Sleeper.run, id=wid, task_queue=QUEUE)
        first = await handle.execute_update(Sleeper.poke, id="poke-1")
        again = await handle.execute_update(Sleeper.poke, id="poke-1")
        assert first == again == 1
        assert await handle.execute_update(Sleeper.poke, id="poke-2") == 2
        assert await handle.result(timeout=30) == 2
    assert (await _kinds(client, wid)).count("WorkflowExecutionUpdateAccepted") == 2


async def test_updates_racing_completion_are_applied_or_refused_never_lost(client: Client) -> None:
    wid = _id("update-race")
    async with _worker(client):
        handle = await client.start_workflow(Quick.run, id=wid, task_queue=QUEUE)
        outcomes = await asyncio.gather(*(handle.execute_update(Quick.bump, id=f"bump-{i}", timeout=60)
                                          for i in range(5)), return_exceptions=True)
        assert await handle.result(timeout=30) == "done"
    applied = [o for o in outcomes if isinstance(o, int)]
    refused = [o for o in outcomes if isinstance(o, WorkflowAlreadyClosedError)]
    assert len(applied) + len(refused) == 5, outcomes  # each answered: a value or a clear refusal
    kinds = await _kinds(client, wid)
    assert kinds.count("WorkflowExecutionUpdateCompleted") == len(applied)
    assert sorted(applied) == list(range(1, len(applied) + 1))
    # After the close, an update is refused at once.
    with pytest.raises(WorkflowAlreadyClosedError):
        await handle.execute_update(Quick.bump, id="late")


async def test_an_update_over_kafka_and_of_a_missing_workflow(cluster: Cluster, client: Client) -> None:
    wid = _id("update-kafka")
    async with _worker(client), ingress.KafkaIngress(cluster.settings.kafka_bootstrap) as kafka:
        handle = await client.start_workflow(Sleeper.run, id=wid, task_queue=QUEUE)
        reply = await kafka.update_workflow("default", wid, "poke", update_id="k-1")
        assert reply.ok and reply.update_outcome is not None
        outcome = json.loads(reply.update_outcome)
        assert outcome["stage"] == "completed" and json.loads(outcome["result"]) == 1
        missing = await kafka.update_workflow("default", _id("nobody"), "poke")
        assert not missing.ok and missing.error_type == "WorkflowNotFound"
        assert await handle.result(timeout=30) == 1


async def _has(client: Client, wid: str, kind: str) -> bool:
    return kind in await _kinds(client, wid)


async def test_http_refusals_and_an_update_of_a_missing_workflow(client: Client) -> None:
    wid = _id("update-http")
    async with _worker(client):
        handle = await client.start_workflow(Cart.run, id=wid, task_queue=QUEUE)
        with pytest.raises(RPCError) as bad:
            await client.transport.call("POST", f"/workflows/{wid}/update", body={
                "update_id": "x", "update_name": "add", "input": ["a"], "wait_for_stage": "admitted"})
        assert bad.value.status == 400 and "wait_for_stage" in str(bad.value)
        with pytest.raises(RPCError) as no_name:
            await client.transport.call("POST", f"/workflows/{wid}/update", body={"update_id": "x"})
        assert no_name.value.status == 400
        # A validator's rejection already raises from start_update.
        with pytest.raises(WorkflowUpdateFailedError, match="an item needs a name"):
            await handle.start_update(Cart.add, "")
        # wait_for_stage accepted answers before the handler is over.
        answer = await client.transport.call("POST", f"/workflows/{wid}/update", body={
            "update_id": "later-1", "update_name": "add_later", "input": ["fig"], "wait_for_stage": "accepted"})
        assert answer["stage"] == "accepted" and answer["result"] is None
        assert await handle.execute_update(Cart.add_later, "ignored", id="later-1") == 1  # the same update
        await handle.terminate("done")
    with pytest.raises(WorkflowNotFoundError):
        await client.get_workflow_handle(_id("nobody")).execute_update(Cart.add, "x")


async def test_an_update_still_running_when_the_run_closes_is_answered_workflow_closed(client: Client) -> None:
    wid = _id("update-left")
    async with _worker(client):
        handle = await client.start_workflow(Impatient.run, id=wid, task_queue=QUEUE)
        slow = await handle.start_update(Impatient.slow)  # accepted: its handler sleeps
        waiting = asyncio.ensure_future(slow.result(timeout=60))
        await handle.signal(Impatient.leave)
        assert await handle.result(timeout=30) == "left"
        with pytest.raises(WorkflowAlreadyClosedError, match="closed"):
            await waiting
    kinds = await _kinds(client, wid)
    assert "WorkflowExecutionUpdateAccepted" in kinds and "WorkflowExecutionUpdateCompleted" not in kinds


async def _poll(client: Client, queue: str) -> dict[str, Any]:
    for _ in range(10):  # bounded: a task is due, each poll waits up to 5 s for it
        answer = await client.transport.call("POST", f"/task-queues/{queue}/workflow-tasks/poll",
                                             body={"identity": "by-hand", "max_tasks": 1, "wait_seconds": 5})
        if answer["tasks"]:
            return dict(answer["tasks"][0])
    raise AssertionError("no workflow task came")


async def _waiting_updates(cluster: Cluster, wid: str) -> list[str]:
    conn = await asyncpg.connect(cluster.settings.database_url)
    try:
        state = await conn.fetchval("SELECT state FROM executions WHERE workflow_id = $1", wid)
    finally:
        await conn.close()
    return sorted(json.loads(state).get("update_requests") or {})


async def test_an_update_arriving_while_a_closing_task_is_in_flight_is_delivered_not_lost(
        cluster: Cluster, client: Client) -> None:
    """Played by hand through the HTTP API (a worker's part), so the race is not left to chance:
    the update arrives after the task was handed out; the task's close is refused and the
    next task brings the update, which the workflow answers before it closes."""
    wid, queue = _id("update-inflight"), "q-update-by-hand"
    handle = await client.start_workflow("ByHand", id=wid, task_queue=queue)
    first = await _poll(client, queue)
    assert first["updates"] == []
    update = asyncio.ensure_future(handle.execute_update("bump", 1, id="late-1", timeout=60))
    await eventually(lambda: _waiting_updates(cluster, wid), timeout=20, what="the update request")
    close = [{"command_type": "CompleteWorkflowExecution", "attributes": {"result": '"done"'}}]
    await client.transport.call("POST", "/workflow-tasks/complete",
                                body={"task_token": first["task_token"], "commands": close, "identity": "by-hand"})
    second = await _poll(client, queue)
    assert [u["update_id"] for u in second["updates"]] == ["late-1"]
    assert second["updates"][0]["name"] == "bump" and json.loads(second["updates"][0]["input"]) == [1]
    kinds = await _kinds(client, wid)
    failed = [e for e in await handle.history() if e["event_type"] == "WorkflowTaskFailed"]
    assert failed and failed[0]["attributes"]["cause"] == "UnhandledCommand"
    assert "WorkflowExecutionCompleted" not in kinds and not update.done()
    answer = [{"command_type": "AcceptWorkflowUpdate", "attributes": {"update_id": "late-1"}},
              {"command_type": "CompleteWorkflowUpdate", "attributes": {"update_id": "late-1", "result": "2"}},
              *close]
    await client.transport.call("POST", "/workflow-tasks/complete",
                                body={"task_token": second["task_token"], "commands": answer, "identity": "by-hand"})
    assert await asyncio.wait_for(update, 30) == 2
    assert await handle.result(timeout=30) == "done"


async def test_another_client_waits_for_an_update_by_its_id_alone_and_never_runs_one(
        cluster: Cluster, client: Client) -> None:
    wid = _id("update-elsewhere")
    other = await Client.connect(cluster.url)
    try:
        async with _worker(client):
            handle = await client.start_workflow(Cart.run, id=wid, task_queue=QUEUE)
            await handle.start_update(Cart.add_later, "pear", id="later-1")
            # Another client knows the update by its id alone (Temporal's get_update_handle).
            elsewhere = other.get_workflow_handle(wid).get_update_handle("later-1", result_type=int)
            assert await elsewhere.result(timeout=30) == 1
            assert await elsewhere.result() == 1  # asked again: the same outcome
            with pytest.raises(WorkflowUpdateFailedError) as unknown:
                await other.get_workflow_handle(wid).get_update_handle("never-sent").result(timeout=30)
            assert unknown.value.rejected and getattr(unknown.value.cause, "type", None) == "UpdateNotFound"
            assert "never-sent" in str(unknown.value)
            assert await handle.execute_update(Cart.checkout) == 1
            assert await handle.result(timeout=30) == ["pear"]
    finally:
        await other.close()
    assert (await _kinds(client, wid)).count("WorkflowExecutionUpdateAccepted") == 2
