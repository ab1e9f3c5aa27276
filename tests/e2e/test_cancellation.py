"""Cancellation end to end on the real broker and PostgreSQL: a cancel while the workflow
sleeps, while an activity heartbeats, one the workflow ignores, one over Kafka, one of a
closed run; and the audit verifies runs with the new events."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from kadence import Client, Worker, activity, workflow
from kadence import kafka as ingress
from kadence.exceptions import (
    CanceledError,
    WorkflowFailureError,
    WorkflowNotFoundError,
)
from services.cluster import Cluster
from services.history.audit import audit
from tests.helpers import eventually

from .test_audit import _published


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    """This module's tests share one cluster (tests/e2e/conftest.py module_cluster)."""
    return module_cluster


pytestmark = pytest.mark.timeout(90)
QUEUE = "q-cancel"

# What the activities saw, by workflow id (they run in this process).
SEEN: dict[str, list[str]] = {}


@activity.defn
async def heartbeat_until_cancelled() -> str:
    wid = activity.info().workflow_id
    SEEN.setdefault(wid, []).append("started")
    try:
        for i in range(600):  # bounded: a minute at most
            activity.heartbeat(i)
            await asyncio.sleep(0.1)
    except asyncio.CancelledError:
        SEEN[wid].append(f"cancel_requested={activity.is_cancel_requested()}")
        raise
    return "never cancelled"


@activity.defn
async def clean_up(what: str) -> str:
    SEEN.setdefault(activity.info().workflow_id, []).append(f"cleaned {what}")
    return f"cleaned {what}"


@workflow.defn
class SleepsADay:
    @workflow.run
    async def run(self) -> str:
        await workflow.sleep(timedelta(days=1))
        return "woke"


@workflow.defn
class WorksThenCleansUp:
    @workflow.run
    async def run(self) -> str:
        try:
            # The await raises once the activity has stopped (it learns of the cancel from its
            # next heartbeat), so the cleanup below runs after it.
            return str(await workflow.execute_activity(
                heartbeat_until_cancelled, start_to_close_timeout=timedelta(minutes=1),
                heartbeat_timeout=timedelta(seconds=1),
                cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED))
        except asyncio.CancelledError:
            # Cleanup the workflow's cancellation must not interrupt: shielded.
            await asyncio.shield(workflow.execute_activity(clean_up, "order", start_to_close_timeout=timedelta(
                seconds=30)))
            raise


@workflow.defn
class AwaitsWork:
    """Awaits a heartbeating activity with the default cancellation type (TRY_CANCEL)."""

    @workflow.run
    async def run(self) -> str:
        return str(await workflow.execute_activity(heartbeat_until_cancelled,
                                                   start_to_close_timeout=timedelta(minutes=1),
                                                   heartbeat_timeout=timedelta(seconds=1)))


@workflow.defn
class IgnoresCancel:
    @workflow.run
    async def run(self) -> str:
        try:
            await workflow.sleep(timedelta(days=1))
        except asyncio.CancelledError:
            return "ignored the cancel"
        return "woke"


def _worker(client: Client) -> Worker:
    return Worker(client, task_queue=QUEUE, workflows=[SleepsADay, WorksThenCleansUp, AwaitsWork, IgnoresCancel],
                  activities=[heartbeat_until_cancelled, clean_up])


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def _kinds(client: Client, wid: str) -> list[str]:
    return [e["event_type"] for e in await client.get_workflow_handle(wid).history()]


async def _has(client: Client, wid: str, kind: str) -> bool:
    return kind in await _kinds(client, wid)


async def _activity_started(client: Client, wid: str) -> bool:
    """History knows the activity's attempt runs (its ActivityTaskStarted is written only
    once the activity ends, so the history does not say it yet)."""
    pending = (await client.get_workflow_handle(wid).describe())["pending_activities"]
    return any(a["state"] == "Started" for a in pending)


async def _closed_canceled(client: Client, wid: str) -> None:
    with pytest.raises(WorkflowFailureError) as caught:
        await client.get_workflow_handle(wid).result(timeout=30)
    assert caught.value.status == "Canceled"
    assert isinstance(caught.value.cause, CanceledError)


async def _timer_rows(cluster: Cluster, wid: str) -> list[Any]:
    conn = await asyncpg.connect(cluster.settings.database_url)
    try:
        return list(await conn.fetch("SELECT kind FROM timers WHERE workflow_id = $1", wid))
    finally:
        await conn.close()


async def test_cancel_while_the_workflow_sleeps_cancels_its_timer_and_closes_canceled(cluster: Cluster,
                                                                                     client: Client) -> None:
    wid = _id("cancel-sleep")
    async with _worker(client):
        handle = await client.start_workflow(SleepsADay.run, id=wid, task_queue=QUEUE)
        await eventually(lambda: _has(client, wid, "TimerStarted"), timeout=20, what="the timer")
        assert [r["kind"] for r in await _timer_rows(cluster, wid)] == ["user_timer"]
        await handle.cancel("no longer needed")
        await _closed_canceled(client, wid)
    kinds = await _kinds(client, wid)
    assert kinds[-3:] == ["WorkflowTaskCompleted", "TimerCanceled", "WorkflowExecutionCanceled"]
    requested = next(e for e in await handle.history() if e["event_type"] == "WorkflowExecutionCancelRequested")
    assert requested["attributes"]["reason"] == "no longer needed"
    assert (await handle.describe())["status"] == "Canceled"
    assert await _timer_rows(cluster, wid) == []  # the timer row went with it


async def test_cancel_while_an_activity_heartbeats_reaches_it_and_the_workflow_cleans_up(
        cluster: Cluster, client: Client) -> None:
    wid = _id("cancel-activity")
    async with _worker(client):
        handle = await client.start_workflow(WorksThenCleansUp.run, id=wid, task_queue=QUEUE)
        await eventually(lambda: _activity_started(client, wid), timeout=20, what="the activity's start")
        await handle.cancel(request_id="cancel-once")
        await handle.cancel(request_id="cancel-once")  # a retry of the same request changes nothing
        await _closed_canceled(client, wid)
    assert SEEN[wid] == ["started", "cancel_requested=True", "cleaned order"]
    kinds = await _kinds(client, wid)
    assert kinds.count("WorkflowExecutionCancelRequested") == 1
    for kind in ("ActivityTaskCancelRequested", "ActivityTaskCanceled", "ActivityTaskCompleted",
                 "WorkflowExecutionCanceled"):
        assert kind in kinds
    assert kinds.index("ActivityTaskCanceled") < kinds.index("WorkflowExecutionCanceled")
    assert kinds[kinds.index("ActivityTaskCanceled") - 1] == "ActivityTaskStarted"  # written as it ends
    # A cancel of the closed run is refused clearly, not found as a signal or a terminate of it
    # would be; the retry of the recorded one still answers ok.
    with pytest.raises(WorkflowNotFoundError, match=r"already closed \(Canceled\)") as refused:
        await handle.cancel()
    assert refused.value.status == 404
    await handle.cancel(request_id="cancel-once")

    # The audit replays the new events through the fold and verifies their hash chain.
    await _published(cluster)
    report = await audit(cluster.settings.kafka_bootstrap, cluster.settings.database_url)
    assert report.clean, [str(d) for d in report.divergences]
    assert report.runs >= 1


async def test_try_cancel_closes_at_once_and_the_activity_still_learns_it_should_stop(client: Client) -> None:
    wid = _id("cancel-try")
    async with _worker(client):
        handle = await client.start_workflow(AwaitsWork.run, id=wid, task_queue=QUEUE)
        await eventually(lambda: _activity_started(client, wid), timeout=20, what="the activity's start")
        await handle.cancel()
        await _closed_canceled(client, wid)
        # The run closed without waiting; the activity's next heartbeat tells it to stop.
        await eventually(lambda: "cancel_requested=True" in SEEN.get(wid, ()), timeout=20,
                         what="the activity to see the cancel")
    kinds = await _kinds(client, wid)
    assert kinds[-2:] == ["ActivityTaskCancelRequested", "WorkflowExecutionCanceled"]


async def test_a_workflow_that_ignores_the_cancel_completes(client: Client) -> None:
    wid = _id("cancel-ignored")
    async with _worker(client):
        handle = await client.start_workflow(IgnoresCancel.run, id=wid, task_queue=QUEUE)
        await eventually(lambda: _has(client, wid, "TimerStarted"), timeout=20, what="the timer")
        await handle.cancel()
        assert await handle.result(timeout=30) == "ignored the cancel"
    assert (await handle.describe())["status"] == "Completed"


async def test_cancel_over_kafka_and_of_a_closed_run(cluster: Cluster, client: Client) -> None:
    wid = _id("cancel-kafka")
    async with _worker(client), ingress.KafkaIngress(cluster.settings.kafka_bootstrap) as kafka:
        await client.start_workflow(SleepsADay.run, id=wid, task_queue=QUEUE)
        await eventually(lambda: _has(client, wid, "TimerStarted"), timeout=20, what="the timer")
        reply = await kafka.cancel_workflow("default", wid, reason="from kafka")
        assert reply.ok and reply.run_id
        await _closed_canceled(client, wid)
        again = await kafka.cancel_workflow("default", wid)
        assert not again.ok and again.error_type == "WorkflowNotFound"  # as HTTP's 404 (decision 0022)
        assert "already closed (Canceled)" in (again.error_message or "")
        missing = await kafka.cancel_workflow("default", _id("nobody"))
        assert not missing.ok and missing.error_type == "WorkflowNotFound"
    with pytest.raises(WorkflowNotFoundError):
        await client.get_workflow_handle(_id("nobody")).cancel()
