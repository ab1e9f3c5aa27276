"""Reset end to end on the real broker and PostgreSQL: the repair after a bad deploy (a run
stuck on a non-deterministic change, reset to its first workflow task, completes with the
new code), a reset of a closed run, a bad reset point refused with a clear 400 (and over
Kafka), signals after the reset point received again, a redelivered reset applied once;
and the audit replays the new runs and verifies their hash chains."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import asyncpg
import pytest

from kadence import Client, ResetPoint, Worker, activity, workflow
from kadence import kafka as ingress
from kadence.exceptions import RPCError
from kadence_protocol import avro
from services.cluster import Cluster
from services.history.audit import audit
from tests.helpers import eventually

from .test_audit import _published


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    """This module's tests share one cluster (tests/e2e/conftest.py module_cluster)."""
    return module_cluster


pytestmark = pytest.mark.timeout(120)
QUEUE = "q-reset"
# The code version the workers in this process run: a "deploy" changes it between workers.
CODE = {"version": 1}


@activity.defn
async def charge(order: str) -> str:
    return f"charged {order}"


@activity.defn
async def charge_v2(order: str) -> str:
    return f"charged {order} (v2)"


@workflow.defn(name="Order")
class Order:
    def __init__(self) -> None:
        self.shipped: list[str] = []

    @workflow.signal
    def ship(self, where: str) -> None:
        self.shipped.append(where)

    @workflow.update
    def note(self, text: str) -> str:
        return f"noted {text}"

    @workflow.run
    async def run(self, order: str) -> str:
        # Version 2 calls another activity first: not what a version 1 history recorded.
        step = charge if CODE["version"] == 1 else charge_v2
        charged = await workflow.execute_activity(step, order, start_to_close_timeout=timedelta(seconds=30))
        await workflow.wait_condition(lambda: bool(self.shipped))
        return f"{charged}, shipped to {','.join(self.shipped)}"


@workflow.defn(name="Receipt")
class Receipt:
    @workflow.run
    async def run(self, token: str) -> str:
        return f"receipt {token}"


@workflow.defn(name="Draws")
class Draws:
    """Draws a random token and starts a child under its default id (made from the run's
    seed) before it waits: a reset's new run must replay both as the old run drew them."""

    def __init__(self) -> None:
        self.go = False

    @workflow.signal
    def proceed(self) -> None:
        self.go = True

    @workflow.run
    async def run(self) -> str:
        token = str(workflow.uuid4())
        receipt = await workflow.execute_child_workflow(Receipt.run, token)
        await workflow.wait_condition(lambda: self.go)
        return f"{token}|{receipt}|{workflow.uuid4()}"


def _worker(client: Client) -> Worker:
    return Worker(client, task_queue=QUEUE, workflows=[Order, Draws, Receipt], activities=[charge, charge_v2])


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def _kinds(client: Client, wid: str, run_id: str | None = None) -> list[str]:
    return [e["event_type"] for e in await client.get_workflow_handle(wid, run_id=run_id).history()]


async def _runs(cluster: Cluster, wid: str) -> int:
    conn = await asyncpg.connect(cluster.settings.database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM executions WHERE workflow_id = $1", wid))
    finally:
        await conn.close()


@pytest.fixture(autouse=True)
def _version_one() -> None:
    CODE["version"] = 1


async def test_reset_after_a_non_deterministic_change_completes_with_the_new_code(cluster: Cluster,
                                                                                    client: Client) -> None:
    wid = _id("reset-deploy")
    async with _worker(client):
        old = await client.start_workflow(Order.run, "o-1", id=wid, task_queue=QUEUE)
        await eventually(lambda: _waits(client, wid), timeout=30, what="the charge and the wait for shipping")
    CODE["version"] = 2  # the bad deploy: a new worker replays the run with other code
    async with _worker(client):
        await old.signal(Order.ship, "berlin")  # a signal after the reset point: it is received again
        await eventually(lambda: _task_failed(client, wid), timeout=30, what="the stuck workflow task")
        # An update asked while the run is stuck waits for a worker to take it: the reset's
        # new run takes it over, and its caller gets the new run's answer.
        noted = asyncio.ensure_future(client.get_workflow_handle(wid).execute_update(Order.note, "fragile",
                                                                                     timeout=30))
        await eventually(lambda: _update_waits(cluster, old.run_id), timeout=20, what="the update request")
        new = await old.reset(ResetPoint.FIRST, reason="bad deploy")
        assert await noted == "noted fragile"
        assert new.run_id and new.run_id != old.run_id
        assert await new.result(timeout=30) == "charged o-1 (v2), shipped to berlin"
        # A handle to the old run follows the reset to the new run, as continue-as-new.
        assert await old.result(timeout=30) == "charged o-1 (v2), shipped to berlin"
    old_events = await old.history()
    assert old_events[-1]["event_type"] == "WorkflowExecutionTerminated"
    assert old_events[-1]["attributes"]["new_run_id"] == new.run_id
    assert new.run_id in old_events[-1]["attributes"]["reason"]
    assert "bad deploy" in old_events[-1]["attributes"]["reason"]
    events = await new.history()
    kinds = [e["event_type"] for e in events]
    # The copy up to the first task's start, the task failed by the reset, the signal again, a new task.
    assert kinds[:6] == ["WorkflowExecutionStarted", "WorkflowTaskScheduled", "WorkflowTaskStarted",
                         "WorkflowTaskFailed", "WorkflowExecutionSignaled", "WorkflowTaskScheduled"]
    failed = events[3]["attributes"]
    assert failed["cause"] == "ResetWorkflow"
    assert (failed["base_run_id"], failed["new_run_id"]) == (old.run_id, new.run_id)
    assert events[0]["event_time"] == old_events[0]["event_time"]  # a copy, time and all
    assert kinds[-1] == "WorkflowExecutionCompleted" and "ActivityTaskScheduled" in kinds
    # Describe shows the links both ways; the workflow's current run is the new one.
    assert (await new.describe())["reset_from_run_id"] == old.run_id
    # (The start's handle describes the workflow's current run, as Temporal's: pin the old one.)
    described = await client.get_workflow_handle(wid, run_id=old.run_id).describe()
    assert described["status"] == "Terminated" and described["reset_to_run_ids"] == [new.run_id]
    assert (await client.get_workflow_handle(wid).describe())["run_id"] == new.run_id

    # The audit replays both runs (the new events included) and verifies their hash chains.
    await _published(cluster)
    report = await audit(cluster.settings.kafka_bootstrap, cluster.settings.database_url)
    assert report.clean, [str(d) for d in report.divergences]
    assert report.runs >= 2


async def _update_waits(cluster: Cluster, run_id: str | None) -> bool:
    conn = await asyncpg.connect(cluster.settings.database_url)
    try:
        state = await conn.fetchval("SELECT state FROM executions WHERE run_id = $1", run_id)
    finally:
        await conn.close()
    return bool(state) and b'"update_requests":{"' in bytes(state)


async def _waits(client: Client, wid: str) -> bool:
    kinds = await _kinds(client, wid)
    return "ActivityTaskCompleted" in kinds and kinds[-1] == "WorkflowTaskCompleted"


async def _task_failed(client: Client, wid: str) -> bool:
    return "WorkflowTaskFailed" in await _kinds(client, wid)


async def test_reset_of_a_closed_run_to_its_last_task_runs_the_end_again(cluster: Cluster, client: Client) -> None:
    wid = _id("reset-closed")
    async with _worker(client):
        old = await client.start_workflow(Order.run, "o-2", id=wid, task_queue=QUEUE)
        await old.signal(Order.ship, "paris")
        assert await old.result(timeout=30) == "charged o-2, shipped to paris"
        new = await old.reset(ResetPoint.LAST)
        assert await new.result(timeout=30) == "charged o-2, shipped to paris"
    # The closed run is left as it was; describe names the run reset from it.
    old_run = client.get_workflow_handle(wid, run_id=old.run_id)
    assert (await old_run.describe())["status"] == "Completed"
    assert (await old_run.describe())["reset_to_run_ids"] == [new.run_id]
    kinds = await _kinds(client, wid, new.run_id)
    failed = kinds.index("WorkflowTaskFailed")
    # The last completed task was the one that completed the run: only it runs again.
    assert kinds[failed + 1:] == ["WorkflowTaskScheduled", "WorkflowTaskStarted", "WorkflowTaskCompleted",
                                  "WorkflowExecutionCompleted"]
    assert kinds.count("ActivityTaskCompleted") == 1  # copied, not run again


async def test_a_bad_reset_point_is_a_clear_400_over_http_and_refused_over_kafka(cluster: Cluster,
                                                                                 client: Client) -> None:
    wid = _id("reset-bad")
    async with _worker(client), ingress.KafkaIngress(cluster.settings.kafka_bootstrap) as kafka:
        handle = await client.start_workflow(Order.run, "o-3", id=wid, task_queue=QUEUE)
        await eventually(lambda: _waits(client, wid), timeout=30, what="the wait for shipping")
        length = len(await handle.history())
        with pytest.raises(RPCError) as caught:
            await handle.reset(1)  # WorkflowExecutionStarted: no workflow task
        assert caught.value.status == 400 and caught.value.error_type == "InvalidResetPoint"
        assert "event 1 of run" in str(caught.value) and "is WorkflowExecutionStarted" in str(caught.value)
        with pytest.raises(RPCError, match=f"has events 1 to {length}: there is no event 999") as caught:
            await handle.reset(999)
        assert caught.value.status == 400
        with pytest.raises(ValueError, match="middle"):
            await handle.reset("middle")
        reply = await kafka.reset_workflow("default", wid, 1)
        assert not reply.ok and reply.error_type == "InvalidResetPoint"
        # A record HTTP would refuse as malformed is refused by history's same check (and
        # dead-lettered), over HTTP it is a 400 naming the field.
        malformed = {"namespace": "default", "workflow_id": wid, "run_id": None, "reset_point": "first",
                     "event_id": 5, "reapply_signals": True, "reason": "", "request_id": "malformed",
                     "identity": "", "reply_to": kafka.reply_to}
        refused = await kafka.send("default", wid, avro.encode("ResetWorkflowExecution", malformed), "malformed")
        assert not refused.ok and "event_id must be 0" in (refused.error_message or "")
        with pytest.raises(RPCError, match="event_id must be 0") as caught:
            await client.transport.call("POST", f"/workflows/{wid}/reset",
                                        body={"reset_point": "first", "event_id": 5})
        assert caught.value.status == 400
        # Nothing was written: the run goes on, alone.
        assert len(await handle.history()) == length
        assert await _runs(cluster, wid) == 1
        await handle.signal(Order.ship, "rome")
        assert await handle.result(timeout=30) == "charged o-3, shipped to rome"


async def test_signals_after_the_point_are_received_again_and_a_redelivered_reset_applies_once(
        cluster: Cluster, client: Client) -> None:
    wid = _id("reset-once")
    async with _worker(client), ingress.KafkaIngress(cluster.settings.kafka_bootstrap) as kafka:
        old = await client.start_workflow(Order.run, "o-4", id=wid, task_queue=QUEUE)
        await eventually(lambda: _waits(client, wid), timeout=30, what="the wait for shipping")
        # The same record produced twice (a producer's retry): one reset, one answer.
        record = ingress.encode_reset("default", wid, ResetPoint.FIRST, request_id="reset-once",
                                      reason="redelivered", reply_to=kafka.reply_to)
        first = await kafka.send("default", wid, record, "reset-once")
        again = await kafka.send("default", wid, record, "reset-once")
        assert first.ok and again.ok and first.run_id == again.run_id
        # And once more over HTTP with the same request id.
        assert (await old.reset(ResetPoint.FIRST, request_id="reset-once")).run_id == first.run_id
        assert await _runs(cluster, wid) == 2
        assert (await _kinds(client, wid, old.run_id)).count("WorkflowExecutionTerminated") == 1
        # Resetting the old run again while the new one is open: the open one is terminated
        # too, naming the newest run (a workflow has one open run), which is current.
        reset_again = await old.reset(ResetPoint.FIRST)
        described = await client.get_workflow_handle(wid, run_id=first.run_id).describe()
        assert described["status"] == "Terminated" and described["new_run_id"] == reset_again.run_id
        assert (await client.get_workflow_handle(wid).describe())["run_id"] == reset_again.run_id
        assert await _runs(cluster, wid) == 3
        new = client.get_workflow_handle(wid, run_id=reset_again.run_id)
        await new.signal(Order.ship, "oslo")
        assert await new.result(timeout=30) == "charged o-4, shipped to oslo"
        # A reset that does not reapply signals: the signal recorded after the point is not received.
        newer = await new.reset(ResetPoint.FIRST, reapply_signals=False)
        kinds = await _kinds(client, wid, newer.run_id)
        assert "WorkflowExecutionSignaled" not in kinds
        await newer.signal(Order.ship, "lima")
        assert await newer.result(timeout=30) == "charged o-4, shipped to lima"


async def test_a_reset_run_replays_the_random_draws_and_child_ids_of_the_run_it_was_copied_from(
        client: Client) -> None:
    wid = _id("reset-draws")
    async with _worker(client):
        old = await client.start_workflow(Draws.run, id=wid, task_queue=QUEUE)
        await eventually(lambda: _child_done_and_waiting(client, wid), timeout=30, what="the child and the wait")
        new = await old.reset(ResetPoint.LAST, reason="draws")
        await new.signal(Draws.proceed)
        token, receipt, after = str(await new.result(timeout=30)).split("|")
    # The token and the child (its id made from the old run's seed) replayed as drawn, with
    # no task failed since the reset; the draw after the reset comes from the new run's seed.
    child = next(e for e in await old.history() if e["event_type"] == "StartChildWorkflowExecutionInitiated")
    assert child["attributes"]["workflow_id"] == f"{old.run_id}-child-1"
    assert child["attributes"]["input"] == f'["{token}"]'.replace(" ", "") and receipt == f"receipt {token}"
    kinds = [e["event_type"] for e in await new.history()]
    assert kinds.count("WorkflowTaskFailed") == 1  # the reset's own
    assert after and after != token


async def _child_done_and_waiting(client: Client, wid: str) -> bool:
    kinds = await _kinds(client, wid)
    return "ChildWorkflowExecutionCompleted" in kinds and kinds[-1] == "WorkflowTaskCompleted"
