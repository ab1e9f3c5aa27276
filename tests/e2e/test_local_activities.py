"""Local activities end to end against the real broker and PostgreSQL: run in the worker within
the workflow task, recorded as markers, retried, and replayed (after a worker restart) without
running again."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import timedelta
from typing import Any

import pytest

from kadence import Client, RetryPolicy, Worker, activity, workflow
from kadence.exceptions import ActivityError, ActivityTimeoutError
from services.cluster import Cluster
from tests.helpers import eventually


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    """This module's tests share one cluster (tests/e2e/conftest.py module_cluster)."""
    return module_cluster


pytestmark = pytest.mark.timeout(90)

CALLS: dict[str, int] = {}


@activity.defn
async def flaky(key: str) -> str:
    CALLS[key] = CALLS.get(key, 0) + 1
    if CALLS[key] < 3:
        raise RuntimeError(f"attempt {activity.info().attempt} failed")
    return f"{key} after {CALLS[key]} attempts"


@activity.defn
async def hangs(key: str) -> str:
    CALLS[key] = CALLS.get(key, 0) + 1
    await asyncio.sleep(30)
    return "late"


@activity.defn
def count_once(key: str) -> int:
    CALLS[key] = CALLS.get(key, 0) + 1
    return CALLS[key]


@workflow.defn
class Retried:
    @workflow.run
    async def run(self, key: str) -> str:
        result: str = await workflow.execute_local_activity(
            flaky, key, start_to_close_timeout=timedelta(seconds=5),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=50), maximum_attempts=5))
        return result


@workflow.defn
class TimedOut:
    @workflow.run
    async def run(self, key: str) -> str:
        try:
            await workflow.execute_local_activity(hangs, key, start_to_close_timeout=timedelta(milliseconds=200),
                                                  retry_policy=RetryPolicy(maximum_attempts=1))
        except ActivityError as err:
            assert isinstance(err.cause, ActivityTimeoutError)
            return f"timed out: {err.cause.timeout_type}"
        return "completed?"


@workflow.defn
class ThenWaits:
    def __init__(self) -> None:
        self.go = False

    @workflow.run
    async def run(self, key: str) -> int:
        seen: int = await workflow.execute_local_activity(count_once, key, start_to_close_timeout=timedelta(seconds=5))
        await workflow.wait_condition(lambda: self.go)
        return seen

    @workflow.signal
    def proceed(self) -> None:
        self.go = True


@workflow.defn
class ActivityThenLocal:
    @workflow.run
    async def run(self, key: str) -> str:
        first: int = await workflow.execute_activity(count_once, key, start_to_close_timeout=timedelta(seconds=5))
        second: int = await workflow.execute_local_activity(count_once, key, start_to_close_timeout=timedelta(seconds=5))
        return f"{first},{second}"


@activity.defn
async def where_am_i() -> bool:
    return activity.info().is_local


@workflow.defn
class LocalOrNot:
    @workflow.run
    async def run(self) -> list[bool]:
        once = RetryPolicy(maximum_attempts=1)
        remote = await workflow.execute_activity(where_am_i, start_to_close_timeout=timedelta(seconds=5),
                                                 retry_policy=once)
        local = await workflow.execute_local_activity(where_am_i, start_to_close_timeout=timedelta(seconds=5),
                                                      retry_policy=once)
        return [remote, local]


async def test_activity_info_says_whether_the_attempt_is_local(client: Client) -> None:
    async with Worker(client, task_queue="q-local", workflows=[LocalOrNot], activities=[where_am_i]):
        assert await client.execute_workflow(LocalOrNot.run, id=_id("is-local"), task_queue="q-local") == [False, True]


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _types(events: list[dict[str, Any]]) -> list[str]:
    return [e["event_type"] for e in events]


async def test_a_local_activity_failing_twice_then_succeeding(client: Client) -> None:
    key = _id("flaky")
    async with Worker(client, task_queue="q-local", workflows=[Retried]):
        handle = await client.start_workflow(Retried.run, key, id=key, task_queue="q-local")
        assert await handle.result(timeout=30) == f"{key} after 3 attempts"
    events = await handle.history()
    assert "ActivityTaskScheduled" not in _types(events)  # no matching round trip
    assert [e["attributes"]["marker_name"] for e in events if e["event_type"] == "MarkerRecorded"] == \
        ["local_activity:1"]


async def test_a_local_activity_that_times_out(client: Client) -> None:
    key = _id("hangs")
    async with Worker(client, task_queue="q-local", workflows=[TimedOut]):
        assert await client.execute_workflow(TimedOut.run, key, id=key, task_queue="q-local") == \
            "timed out: StartToClose"
    assert CALLS[key] == 1


async def test_replay_after_a_worker_restart_does_not_run_the_local_activity_again(client: Client) -> None:
    key = _id("once")
    async with Worker(client, task_queue="q-local-restart", workflows=[ThenWaits]):
        handle = await client.start_workflow(ThenWaits.run, key, id=key, task_queue="q-local-restart")

        async def recorded() -> bool:
            return "MarkerRecorded" in _types(await handle.history())

        await eventually(recorded, timeout=30, what="the local activity's marker")
    assert CALLS[key] == 1
    # A new worker holds nothing: the signal's task replays the history from the start.
    async with Worker(client, task_queue="q-local-restart", workflows=[ThenWaits]):
        await handle.signal(ThenWaits.proceed)
        assert await handle.result(timeout=30) == 1
    assert CALLS[key] == 1


async def test_a_local_activity_after_an_activity_whose_result_would_run_the_next_task_ahead(
        client: Client, caplog: pytest.LogCaptureFixture) -> None:
    # The activity's result would carry the next workflow task (run ahead); that task runs a
    # local activity, so the worker hands the result over alone and the task is polled.
    key = _id("ahead")
    caplog.set_level(logging.INFO, logger="kadence._worker.workflow_tasks")
    async with Worker(client, task_queue="q-local-ahead", workflows=[ActivityThenLocal], activities=[count_once]):
        assert await client.execute_workflow(ActivityThenLocal.run, key, id=key, task_queue="q-local-ahead") == "1,2"
    assert CALLS[key] == 2
    assert "a workflow task that runs local activities is not run ahead" in caplog.text


@workflow.defn
class BacksOffAcrossTasks:
    @workflow.run
    async def run(self, key: str) -> str:
        result: str = await workflow.execute_local_activity(
            flaky, key, start_to_close_timeout=timedelta(milliseconds=500),
            retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=1.0))
        return result


async def test_a_backoff_longer_than_the_task_budget_is_a_durable_timer(client: Client) -> None:
    # A 1 s workflow task timeout gives local activities 0.8 s per task: each 1 s backoff
    # is waited out on a timer, and the next attempt runs in the task its firing brings.
    key = _id("timer")
    async with Worker(client, task_queue="q-local-timer", workflows=[BacksOffAcrossTasks]):
        handle = await client.start_workflow(BacksOffAcrossTasks.run, key, id=key, task_queue="q-local-timer",
                                             workflow_task_timeout=timedelta(seconds=1))
        assert await handle.result(timeout=30) == f"{key} after 3 attempts"
    events = await handle.history()
    timers = [e["attributes"]["timer_id"] for e in events if e["event_type"] == "TimerStarted"]
    assert timers == ["local_activity:1:1", "local_activity:1:2"]
    assert _types(events).count("TimerFired") == 2
    assert CALLS[key] == 3
