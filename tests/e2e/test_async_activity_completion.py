"""Async activity completion (activity.raise_complete_async(), client.get_async_activity_handle):
the attempt stays running after the function returns, until a client completes, fails,
heartbeats or reports its cancellation by its task token; its timeouts still apply, and a
token whose attempt is over is refused (404 ActivityNotFound, ActivityNotFoundError) rather
than dropped."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest

from kadence import ActivityNotFoundError, Client, RetryPolicy, Worker, activity, workflow
from kadence.exceptions import (
    ActivityError,
    ActivityTimeoutError,
    ApplicationError,
    AsyncActivityCancelledError,
    RPCError,
)
from services.cluster import Cluster
from tests.helpers import eventually


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    """This module's tests share one cluster (tests/e2e/conftest.py module_cluster)."""
    return module_cluster


pytestmark = pytest.mark.timeout(90)
QUEUE = "q-async-activity"

# The task tokens handed out, by workflow id, in attempt order (the activity runs in this process).
TOKENS: dict[str, list[str]] = {}
ACTIVITY_IDS: dict[str, str] = {}


@activity.defn
async def outside(note: str) -> str:
    TOKENS.setdefault(activity.info().workflow_id, []).append(activity.info().task_token)
    ACTIVITY_IDS[activity.info().workflow_id] = activity.info().activity_id
    activity.raise_complete_async()


@workflow.defn
class WaitsForOutside:
    @workflow.run
    async def run(self, case: str) -> str:
        retry = RetryPolicy(maximum_attempts=2 if case in ("fail", "ids") else 1,
                            initial_interval=timedelta(milliseconds=100))
        call = workflow.execute_activity(
            outside, case, retry_policy=retry,
            start_to_close_timeout=timedelta(seconds=1 if case == "expire" else 30),
            heartbeat_timeout=timedelta(seconds=1) if case in ("heartbeat", "cancel") else None,
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED)
        if case == "cancel":
            task = asyncio.ensure_future(call)
            await workflow.sleep(0.5)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                return "cancelled"
            return "not cancelled"
        try:
            return str(await call)
        except ActivityError as err:
            return f"{type(err.cause).__name__}: {err.cause}"


async def _tokens(wid: str, count: int) -> list[str]:
    def enough() -> list[str]:
        got = TOKENS.get(wid, [])
        return list(got) if len(got) >= count else []

    return await eventually(enough, timeout=20, what=f"{count} attempt(s) of {wid}")


async def _refused(client: Client, token: str) -> RPCError:
    with pytest.raises(ActivityNotFoundError) as refused:
        await client.get_async_activity_handle(task_token=token).complete("too late")
    assert refused.value.status == 404 and refused.value.error_type == "ActivityNotFound"
    assert "stale task token" in refused.value.message
    return refused.value


async def _run(client: Client, case: str) -> str:
    wid = f"async-act-{case}-{uuid.uuid4().hex[:8]}"
    await client.start_workflow(WaitsForOutside.run, case, id=wid, task_queue=QUEUE)
    return wid


async def test_a_client_completes_the_activity_once(client: Client) -> None:
    async with Worker(client, task_queue=QUEUE, workflows=[WaitsForOutside], activities=[outside]):
        wid = await _run(client, "complete")
        [token] = await _tokens(wid, 1)
        await client.get_async_activity_handle(task_token=token).complete("from outside")
        handle = client.get_workflow_handle(wid)
        assert await handle.result(timeout=20) == "from outside"
        await _refused(client, token)  # completed already: a second completion is stale
    events = [e["event_type"] for e in await handle.history()]
    assert events.count("ActivityTaskCompleted") == 1, events
    assert len(TOKENS[wid]) == 1


async def test_a_failure_is_retried_with_a_new_token_and_the_old_one_is_refused(client: Client) -> None:
    async with Worker(client, task_queue=QUEUE, workflows=[WaitsForOutside], activities=[outside]):
        wid = await _run(client, "fail")
        [first] = await _tokens(wid, 1)
        await client.get_async_activity_handle(task_token=first).fail(ApplicationError("boom 1", type="Boom"))
        first_again, second = await _tokens(wid, 2)
        assert first_again == first and second != first
        await _refused(client, first)
        await client.get_async_activity_handle(task_token=second).fail(ApplicationError("boom 2", type="Boom"))
        assert await client.get_workflow_handle(wid).result(timeout=20) == "ApplicationError: boom 2"


async def test_heartbeats_from_outside_keep_the_attempt_alive(client: Client) -> None:
    async with Worker(client, task_queue=QUEUE, workflows=[WaitsForOutside], activities=[outside]):
        wid = await _run(client, "heartbeat")
        [token] = await _tokens(wid, 1)
        outer = client.get_async_activity_handle(task_token=token)
        loop = asyncio.get_running_loop()
        until = loop.time() + 3  # three heartbeat timeouts
        while loop.time() < until:
            await outer.heartbeat("progress")
            await asyncio.sleep(0.25)
        await outer.complete("alive")
        handle = client.get_workflow_handle(wid)
        assert await handle.result(timeout=20) == "alive"
    events = [e["event_type"] for e in await handle.history()]
    assert "ActivityTaskTimedOut" not in events, events


async def test_without_heartbeats_the_attempt_times_out_and_a_late_completion_is_refused(client: Client) -> None:
    async with Worker(client, task_queue=QUEUE, workflows=[WaitsForOutside], activities=[outside]):
        wid = await _run(client, "expire")
        [token] = await _tokens(wid, 1)
        result = await client.get_workflow_handle(wid).result(timeout=20)
        assert result.startswith(ActivityTimeoutError.__name__), result
        await _refused(client, token)


async def test_the_workflows_cancel_is_seen_by_the_outside_heartbeat(client: Client) -> None:
    async with Worker(client, task_queue=QUEUE, workflows=[WaitsForOutside], activities=[outside]):
        wid = await _run(client, "cancel")
        [token] = await _tokens(wid, 1)
        outer = client.get_async_activity_handle(task_token=token)

        async def cancelled() -> bool:
            try:
                await outer.heartbeat()
            except AsyncActivityCancelledError:
                return True
            return False

        seen: bool = await eventually(cancelled, timeout=20, what="the heartbeat to see the cancel")
        assert seen
        await outer.report_cancellation("stopped")
        assert await client.get_workflow_handle(wid).result(timeout=20) == "cancelled"


async def test_by_ids_the_handle_answers_whichever_attempt_is_running(client: Client) -> None:
    async with Worker(client, task_queue=QUEUE, workflows=[WaitsForOutside], activities=[outside]):
        wid = await _run(client, "ids")
        await _tokens(wid, 1)
        by_ids = client.get_async_activity_handle(workflow_id=wid, activity_id=ACTIVITY_IDS[wid])
        await by_ids.heartbeat("first")
        await by_ids.fail(ApplicationError("retry me", type="Boom"))
        await _tokens(wid, 2)
        await by_ids.complete("second attempt")
        assert await client.get_workflow_handle(wid).result(timeout=20) == "second attempt"
        with pytest.raises(ActivityNotFoundError) as refused:
            await by_ids.complete("again")
        assert refused.value.status == 404 and refused.value.error_type == "ActivityNotFound"
    events = [e["event_type"] for e in await client.get_workflow_handle(wid).history()]
    assert events.count("ActivityTaskCompleted") == 1 and "ActivityTaskFailed" not in events, events
