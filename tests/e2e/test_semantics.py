"""Temporal semantics end to end (SDK → frontend → Kafka → history → PostgreSQL → worker):
the execution timeout covers a continue-as-new chain and the run timeout one run; the
last heartbeat details reach the next attempt after a failure; an activity retried twenty
times leaves a few events, and describe shows its attempts meanwhile."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from kadence import Client, RetryPolicy, Worker, activity, workflow
from kadence.exceptions import WorkflowFailureError, WorkflowTimeoutError
from services.cluster import Cluster
from services.history.audit import audit

from ..helpers import eventually


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    """This module's tests share one cluster (tests/e2e/conftest.py module_cluster)."""
    return module_cluster


pytestmark = pytest.mark.timeout(90)
QUICK_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=50), backoff_coefficient=1.0)
_calls: dict[str, itertools.count[int]] = {}


@activity.defn
async def fails_twenty_times(key: str) -> str:
    n = next(_calls.setdefault(key, itertools.count(1)))
    if n <= 20:
        raise RuntimeError(f"attempt {n} fails")
    return f"done on attempt {activity.info().attempt}"


@activity.defn
async def beats_then_fails(key: str) -> list[Any]:
    info = activity.info()
    if info.attempt == 1:
        activity.heartbeat("halfway", 50)
        raise RuntimeError("fails after a heartbeat")
    return list(info.heartbeat_details)


@workflow.defn
class RetriedWorkflow:
    @workflow.run
    async def run(self, key: str) -> str:
        return await workflow.execute_activity(fails_twenty_times, key, start_to_close_timeout=timedelta(seconds=10),
                                               retry_policy=QUICK_RETRY)


@workflow.defn
class ResumeWorkflow:
    @workflow.run
    async def run(self, key: str) -> list[Any]:
        return await workflow.execute_activity(beats_then_fails, key, start_to_close_timeout=timedelta(seconds=10),
                                               retry_policy=QUICK_RETRY)


@activity.defn
async def always_fails() -> None:
    raise RuntimeError("never")


@workflow.defn
class HopelessWorkflow:
    @workflow.run
    async def run(self) -> None:
        await workflow.execute_activity(always_fails, start_to_close_timeout=timedelta(seconds=10),
                                        retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=200),
                                                                 backoff_coefficient=1.0))


@workflow.defn
class RelayWorkflow:
    """Continues as new every 100 ms, for ever."""

    @workflow.run
    async def run(self, hops: int) -> None:
        await workflow.sleep(0.1)
        workflow.continue_as_new(hops + 1)


@workflow.defn
class IdleWorkflow:
    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)


def _worker(client: Client, queue: str) -> Worker:
    return Worker(client, task_queue=queue, workflows=[RetriedWorkflow, ResumeWorkflow, RelayWorkflow, IdleWorkflow,
                                                          HopelessWorkflow],
                  activities=[fails_twenty_times, beats_then_fails, always_fails])


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_the_execution_timeout_ends_a_continue_as_new_chain(client: Client) -> None:
    wid = _id("chain")
    async with _worker(client, "q-chain"):
        loop = asyncio.get_running_loop()
        began = loop.time()
        handle = await client.start_workflow(RelayWorkflow.run, 0, id=wid, task_queue="q-chain",
                                             execution_timeout=timedelta(seconds=1))
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result(timeout=15)
        elapsed = loop.time() - began
    assert failed.value.status == "TimedOut"
    assert 0.9 <= elapsed < 2.5
    last = await client.get_workflow_handle(wid).describe()
    assert last["status"] == "TimedOut"
    events = await client.get_workflow_handle(wid, run_id=last["run_id"]).history()
    assert events[0]["attributes"]["continued_execution_run_id"]  # timed out in a later run of the chain
    assert events[-1]["event_type"] == "WorkflowExecutionTimedOut"


async def test_a_run_timeout_times_out_the_run(client: Client) -> None:
    wid = _id("run-timeout")
    async with _worker(client, "q-run-timeout"):
        handle = await client.start_workflow(IdleWorkflow.run, id=wid, task_queue="q-run-timeout",
                                             run_timeout=timedelta(milliseconds=500))
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result(timeout=15)
    assert failed.value.status == "TimedOut" and isinstance(failed.value.cause, WorkflowTimeoutError)
    assert str(failed.value) == "workflow timed out"
    events = await handle.history()
    assert events[0]["attributes"]["run_timeout_ms"] == 500
    assert events[-1]["event_time"] - events[0]["event_time"] >= 500


async def test_heartbeat_details_reach_the_attempt_after_a_failure(client: Client) -> None:
    wid = _id("resume")
    async with _worker(client, "q-resume"):
        assert await client.execute_workflow(ResumeWorkflow.run, wid, id=wid, task_queue="q-resume") == [
            "halfway", 50]


async def test_twenty_failed_attempts_leave_a_few_events_and_describe_shows_them(
        client: Client, cluster: Cluster) -> None:
    wid = _id("retried")
    async with _worker(client, "q-retried"):
        handle = await client.start_workflow(RetriedWorkflow.run, wid, id=wid, task_queue="q-retried")

        async def retrying() -> dict[str, Any] | None:
            pending = (await handle.describe())["pending_activities"]
            return pending[0] if pending and pending[0]["attempt"] >= 3 else None

        seen = await eventually(retrying, what="an activity on its third attempt")
        assert seen["last_failure"]["message"].startswith("attempt ")
        assert seen["last_failure"]["type"] == "RuntimeError"
        assert await handle.result(timeout=30) == "done on attempt 21"
    events = await handle.history()
    kinds = [e["event_type"] for e in events]
    assert [k for k in kinds if k.startswith("Activity")] == [
        "ActivityTaskScheduled", "ActivityTaskStarted", "ActivityTaskCompleted"]
    assert len(events) <= 12
    started = next(e for e in events if e["event_type"] == "ActivityTaskStarted")["attributes"]
    assert started["attempt"] == 21 and started["last_failure"]["message"] == "attempt 20 fails"
    conn = await asyncpg.connect(cluster.settings.database_url)
    try:
        stored = await conn.fetchval("SELECT count(*) FROM history_events WHERE run_id = $1", handle.run_id)
    finally:
        await conn.close()
    assert stored == len(events)


async def test_the_audit_accepts_the_attempt_bookkeeping_of_a_retrying_activity(
        client: Client, cluster: Cluster) -> None:
    wid = _id("audited")
    async with _worker(client, "q-audited"):
        handle = await client.start_workflow(HopelessWorkflow.run, id=wid, task_queue="q-audited")

        async def retrying() -> bool:
            pending = (await handle.describe())["pending_activities"]
            return bool(pending and pending[0]["attempt"] >= 3)

        await eventually(retrying, what="an activity on its third attempt")

        async def clean() -> bool:
            # The snapshot's attempt fields differ from a replay of the log (no event
            # names them); everything else agrees once the relay has published.
            report = await audit(cluster.settings.kafka_bootstrap, cluster.settings.database_url)
            assert report.clean, [str(d) for d in report.divergences]
            return True

        await eventually(clean, what="a clean audit")
        await handle.terminate("done")
