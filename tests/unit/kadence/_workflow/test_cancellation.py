"""Cancellation in the SDK: the workflow runtime driven through synthetic histories (the
cancel request as CancelledError, cleanup, Canceled close, activity cancellation types,
timers, replay), and activities told to stop by their heartbeat's answer."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from datetime import timedelta
from typing import Any

import pytest

from kadence import activity, workflow
from kadence._activity import ActivityDefinition
from kadence._worker.activity_tasks import ActivityTaskProcessor
from kadence.exceptions import ActivityError, CanceledError
from kadence.replay import Replayer
from tests.unit._fake_history import Driver, FakeHistory

pytestmark = pytest.mark.timeout(30)
MINUTE = timedelta(minutes=1)


@workflow.defn
class SleepsLong:
    @workflow.run
    async def run(self) -> str:
        await workflow.sleep(timedelta(days=1))
        return "woke"


@workflow.defn
class CleansUp:
    """Cancelled while its activity runs: cleans up with a shielded activity, then re-raises."""

    @workflow.run
    async def run(self, shield: bool) -> str:
        try:
            return str(await workflow.execute_activity("work", start_to_close_timeout=MINUTE,
                                                       heartbeat_timeout=timedelta(seconds=5)))
        except asyncio.CancelledError:
            cleanup = workflow.execute_activity("cleanup", start_to_close_timeout=MINUTE)
            await (asyncio.shield(cleanup) if shield else cleanup)
            raise


@workflow.defn
class Ignores:
    @workflow.run
    async def run(self) -> str:
        try:
            await workflow.sleep(timedelta(hours=1))
        except asyncio.CancelledError:
            pass
        return str(await workflow.execute_activity("after", start_to_close_timeout=MINUTE))


@workflow.defn
class Waits:
    """Cancels its own activity with asyncio.wait_for, with the cancellation type given."""

    @workflow.run
    async def run(self, kind: str) -> str:
        try:
            await asyncio.wait_for(workflow.execute_activity(
                "slow", start_to_close_timeout=MINUTE,
                cancellation_type=workflow.ActivityCancellationType(kind)), timeout=30)
        except TimeoutError:
            return "gave up"
        return "done"


def _types(commands: list[dict[str, Any]]) -> list[str]:
    return [c["command_type"] for c in commands]


def _cancel(history: FakeHistory) -> None:
    history.add("WorkflowExecutionCancelRequested", reason="stop", identity="me", request_id="c")


def test_cancel_of_a_sleeping_workflow_cancels_its_timer_and_closes_canceled() -> None:
    history = FakeHistory("SleepsLong")
    driver = Driver(SleepsLong, history)
    assert _types(driver.step()) == ["StartTimer"]
    _cancel(history)
    commands = driver.next_task()
    assert _types(commands) == ["CancelTimer", "CancelWorkflowExecution"]
    assert commands[0]["attributes"] == {"timer_id": "1"}
    assert driver.runner.finished
    assert Replayer(workflows=[SleepsLong]).replay(history.events) == []


@pytest.mark.parametrize("shield", [False, True])
def test_cancel_while_an_activity_runs_asks_it_to_stop_and_the_workflow_cleans_up(shield: bool) -> None:
    history = FakeHistory("CleansUp", shield)
    driver = Driver(CleansUp, history)
    assert _types(driver.step()) == ["ScheduleActivityTask"]
    work = history.activity_scheduled_id("1")
    _cancel(history)
    commands = driver.next_task()
    assert _types(commands) == ["RequestCancelActivityTask", "ScheduleActivityTask"]
    assert commands[0]["attributes"] == {"scheduled_event_id": work}
    assert commands[1]["attributes"]["activity_type"] == "cleanup"
    # The activity reports itself canceled (its next heartbeat told it), then the cleanup ends.
    history.add("ActivityTaskCanceled", scheduled_event_id=work, started_event_id=0,
                latest_cancel_requested_event_id=0, details=None, identity="w")
    assert driver.next_task() == []
    history.complete_activity("2", None)
    assert _types(driver.next_task()) == ["CancelWorkflowExecution"]
    assert Replayer(workflows=[CleansUp]).replay(history.events) == []


def test_a_workflow_that_ignores_the_cancellation_completes() -> None:
    history = FakeHistory("Ignores")
    driver = Driver(Ignores, history)
    driver.step()
    _cancel(history)
    assert _types(driver.next_task()) == ["CancelTimer", "ScheduleActivityTask"]
    history.complete_activity("1", "fine")
    assert driver.next_task() == [{"command_type": "CompleteWorkflowExecution", "attributes": {"result": '"fine"'}}]
    # A second cancel request is not delivered again (history records only one anyway).
    assert Replayer(workflows=[Ignores]).replay(history.events) == []


def test_try_cancel_raises_at_once_and_asks_the_activity_to_stop() -> None:
    history = FakeHistory("Waits", "TryCancel")
    driver = Driver(Waits, history)
    assert _types(driver.step()) == ["StartTimer", "ScheduleActivityTask"]
    history.fire_timer("1")
    commands = driver.next_task()
    assert _types(commands) == ["RequestCancelActivityTask", "CompleteWorkflowExecution"]
    assert Replayer(workflows=[Waits]).replay(history.events) == []


def test_wait_cancellation_completed_raises_once_the_activity_is_over() -> None:
    history = FakeHistory("Waits", "WaitCancellationCompleted")
    driver = Driver(Waits, history)
    driver.step()
    slow = history.activity_scheduled_id("1")
    history.fire_timer("1")
    assert _types(driver.next_task()) == ["RequestCancelActivityTask"]
    history.add("ActivityTaskCanceled", scheduled_event_id=slow, started_event_id=0,
                latest_cancel_requested_event_id=0, details=None, identity="w")
    assert _types(driver.next_task()) == ["CompleteWorkflowExecution"]
    assert Replayer(workflows=[Waits]).replay(history.events) == []


def test_abandon_sends_no_cancel_request() -> None:
    history = FakeHistory("Waits", "Abandon")
    driver = Driver(Waits, history)
    driver.step()
    history.fire_timer("1")
    assert _types(driver.next_task()) == ["CompleteWorkflowExecution"]


@workflow.defn
class Awaits:
    @workflow.run
    async def run(self) -> str:
        try:
            await workflow.execute_activity("x", start_to_close_timeout=MINUTE)
        except ActivityError as err:
            assert isinstance(err.cause, CanceledError)
            return "activity canceled"
        return "done"


def test_an_activity_canceled_while_awaited_raises_activity_error_with_a_canceled_cause() -> None:
    history = FakeHistory("Awaits")
    driver = Driver(Awaits, history)
    driver.step()
    history.add("ActivityTaskCanceled", scheduled_event_id=history.activity_scheduled_id("1"), started_event_id=0,
                latest_cancel_requested_event_id=0, details=None, identity="w")
    assert driver.next_task()[0]["attributes"] == {"result": '"activity canceled"'}


def test_cancel_before_the_first_task_closes_canceled_without_running_the_code() -> None:
    history = FakeHistory("SleepsLong")
    del history.events[1:]  # the cancel arrived with the start, before the first task was scheduled
    _cancel(history)
    history.schedule_task()
    driver = Driver(SleepsLong, history)
    assert _types(driver.step()) == ["CancelWorkflowExecution"]
    assert Replayer(workflows=[SleepsLong]).replay(history.events) == []


@workflow.defn
class FinishesCharge:
    """Shields its activity: the cancellation interrupts the await, not the activity."""

    @workflow.run
    async def run(self) -> str:
        charge = asyncio.ensure_future(workflow.execute_activity("charge", start_to_close_timeout=MINUTE))
        try:
            return str(await asyncio.shield(charge))
        except asyncio.CancelledError:
            charged = await charge  # not asked to stop: it finishes
            await workflow.execute_activity("refund", charged, start_to_close_timeout=MINUTE)
            raise


def test_a_shielded_activity_is_not_asked_to_stop_and_can_be_awaited_after_the_cancel() -> None:
    history = FakeHistory("FinishesCharge")
    driver = Driver(FinishesCharge, history)
    assert _types(driver.step()) == ["ScheduleActivityTask"]
    _cancel(history)
    assert driver.next_task() == []  # no RequestCancelActivityTask: the charge runs on
    history.complete_activity("1", "charged 5")
    commands = driver.next_task()
    assert _types(commands) == ["ScheduleActivityTask"] and commands[0]["attributes"]["activity_type"] == "refund"
    history.complete_activity("2", None)
    assert _types(driver.next_task()) == ["CancelWorkflowExecution"]
    assert Replayer(workflows=[FinishesCharge]).replay(history.events) == []


class _CancellingTransport:
    """Answers every heartbeat with cancel_requested; records the calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def call(self, method: str, path: str, *, body: Any = None, params: Any = None,
                   timeout: float | None = None) -> dict[str, Any]:
        self.calls.append((path, body))
        return {"cancel_requested": True} if path.endswith("/heartbeat") else {}

    async def close(self) -> None:
        pass


@activity.defn
async def beats_async() -> str:
    for i in range(100):
        activity.heartbeat(i)
        await asyncio.sleep(0.05)
    return "never told"


@activity.defn
def beats_sync() -> str:
    for i in range(100):
        activity.heartbeat(i)
        if activity.is_cancel_requested():
            raise asyncio.CancelledError
        time.sleep(0.02)
    return "never told"


@pytest.mark.parametrize("fn", [beats_async, beats_sync], ids=["async", "sync"])
async def test_an_activity_told_by_its_heartbeat_stops_and_is_reported_canceled(fn: Any) -> None:
    transport = _CancellingTransport()
    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        processor = ActivityTaskProcessor(transport, namespace="default", task_queue="tq",  # type: ignore[arg-type]
                                          activities=[ActivityDefinition.of(fn)], identity="w", executor=executor)
        task = {"task_token": "tok", "workflow_id": "wf", "run_id": "r", "workflow_type": "W", "activity_id": "1",
                "activity_type": fn.__name__, "input": "[]", "attempt": 1, "scheduled_event_id": 5,
                "schedule_to_close_timeout_ms": 0, "start_to_close_timeout_ms": 10_000,
                "heartbeat_timeout_ms": 1000, "heartbeat_details": None, "scheduled_time": 0}
        await asyncio.wait_for(processor.process(task), 10)
    paths = [path for path, _ in transport.calls]
    assert "/activity-tasks/cancel" in paths
    assert "/activity-tasks/complete" not in paths and "/activity-tasks/fail" not in paths
    assert transport.calls[-1] == ("/activity-tasks/cancel", {"task_token": "tok", "details": None, "identity": "w"})
