"""An activity whose cancellation was requested is not retried (Temporal's rule, retry state
CancelRequested): an attempt that fails or times out after the request ends the activity,
so a workflow waiting for the cancellation to complete goes on instead of waiting forever
while the activity is tried again."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest

from kadence import Client, RetryPolicy, Worker, activity, workflow
from services.cluster import Cluster


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    """This module's tests share one cluster (tests/e2e/conftest.py module_cluster)."""
    return module_cluster


pytestmark = pytest.mark.timeout(90)
QUEUE = "q-cancel-no-retry"

# Attempts the activities started, by workflow id (they run in this process).
ATTEMPTS: dict[str, list[int]] = {}
# Set by the test once the run closed: the clean-up of its cancelled activity may end.
CLEANUP_MAY_END: dict[str, asyncio.Event] = {}


@activity.defn
async def fails_when_cancelled(cleanup: str) -> str:
    ATTEMPTS.setdefault(activity.info().workflow_id, []).append(activity.info().attempt)
    try:
        for _ in range(600):  # bounded: a minute at most
            activity.heartbeat()
            await asyncio.sleep(0.1)
    except asyncio.CancelledError:
        if cleanup == "raise":
            raise RuntimeError("the clean-up failed") from None
        # A clean-up without heartbeats, that no further cancellation cuts short, lasting
        # until the test has seen the run close (history timed the attempt out), a minute at
        # most: longer than the heartbeat timeout by construction, not by a guessed margin.
        may_end = CLEANUP_MAY_END.setdefault(activity.info().workflow_id, asyncio.Event())
        deadline = asyncio.get_running_loop().time() + 60
        while not may_end.is_set() and (left := deadline - asyncio.get_running_loop().time()) > 0:
            try:
                await asyncio.wait_for(may_end.wait(), left)
            except (asyncio.CancelledError, TimeoutError):
                pass
        raise
    return "never cancelled"


@workflow.defn
class CancelsItsActivity:
    @workflow.run
    async def run(self, cleanup: str) -> str:
        task = asyncio.ensure_future(workflow.execute_activity(
            fails_when_cancelled, cleanup, start_to_close_timeout=timedelta(seconds=60),
            heartbeat_timeout=timedelta(seconds=1),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100)),
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED))
        await workflow.sleep(0.5)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return "cancelled"
        return "finished"


@pytest.mark.parametrize("cleanup", ["raise", "time out"])
async def test_an_activity_asked_to_cancel_is_not_retried(client: Client, cleanup: str) -> None:
    wid = f"cancel-no-retry-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=QUEUE, workflows=[CancelsItsActivity], activities=[fails_when_cancelled]):
        handle = await client.start_workflow(CancelsItsActivity.run, cleanup, id=wid, task_queue=QUEUE)
        try:
            assert await handle.result(timeout=20) == "cancelled"
        finally:
            CLEANUP_MAY_END.setdefault(wid, asyncio.Event()).set()
    assert ATTEMPTS[wid] == [1]
    events = [e["event_type"] for e in await handle.history()]
    closing = "ActivityTaskFailed" if cleanup == "raise" else "ActivityTaskTimedOut"
    assert events.count(closing) == 1, events
    assert "ActivityTaskCanceled" not in events
