"""Workflow code driven through synthetic histories: commands, inputs, replay, cache."""

from __future__ import annotations

import asyncio
import json
import math
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kadence import workflow
from kadence._workflow.runner import InconsistentHistoryError
from kadence.exceptions import ActivityError, ApplicationError, NonDeterminismError, WorkflowTaskError
from kadence.replay import Replayer
from tests.unit._fake_history import START_MS, Driver, FakeHistory, new_runner

pytestmark = pytest.mark.timeout(30)


@workflow.defn
class Greet:
    @workflow.run
    async def run(self, name: str) -> str:
        greeting = await workflow.execute_activity(
            "compose_greeting", name, start_to_close_timeout=timedelta(seconds=10)
        )
        return f"{greeting}!"


@workflow.defn(name="Greet")
class GreetChanged:
    @workflow.run
    async def run(self, name: str) -> str:
        greeting = await workflow.execute_activity("compose_farewell", name, start_to_close_timeout=timedelta(seconds=10))
        return f"{greeting}!"


@workflow.defn
class Sleeper:
    @workflow.run
    async def run(self, use_asyncio: bool) -> str:
        if use_asyncio:
            await asyncio.sleep(90)
        else:
            await workflow.sleep(timedelta(minutes=1))
        return "awake"


@workflow.defn
class Waiter:
    def __init__(self) -> None:
        self.items: list[str] = []
        self.done = False

    @workflow.run
    async def run(self) -> list[str]:
        await workflow.wait_condition(lambda: self.done)
        return self.items

    @workflow.signal
    def add(self, item: str) -> None:
        self.items.append(item)

    @workflow.signal(name="finish")
    async def finish_signal(self) -> None:
        self.done = True

    @workflow.query
    def count(self) -> int:
        return len(self.items)


@workflow.defn
class Failing:
    @workflow.run
    async def run(self) -> str:
        try:
            await workflow.execute_activity("flaky", schedule_to_close_timeout=timedelta(minutes=1))
        except ActivityError as err:
            return f"caught {err.cause.type}: {err.cause.message}"
        return "no error"


@workflow.defn
class Deterministic:
    @workflow.run
    async def run(self) -> dict[str, Any]:
        first = {"now": workflow.now().isoformat(), "rand": workflow.random().random(), "uuid": str(workflow.uuid4())}
        await workflow.sleep(5)
        second = {"now": workflow.now().isoformat(), "rand": workflow.random().random(), "uuid": str(workflow.uuid4())}
        return {"first": first, "second": second}


@workflow.defn
class Buggy:
    @workflow.run
    async def run(self) -> None:
        raise KeyError("oops")


@workflow.defn
class Rejecting:
    @workflow.run
    async def run(self) -> None:
        raise ApplicationError("nope", {"why": "because"}, type="Rejected", non_retryable=True)


def _types(commands: list[dict[str, Any]]) -> list[str]:
    return [c["command_type"] for c in commands]


def test_activity_then_complete() -> None:
    history = FakeHistory("Greet", "World")
    driver = Driver(Greet, history)
    commands = driver.step()
    assert _types(commands) == ["ScheduleActivityTask"]
    attrs = commands[0]["attributes"]
    assert attrs["activity_id"] == "1"
    assert attrs["activity_type"] == "compose_greeting"
    assert attrs["task_queue"] == "tq"
    assert attrs["start_to_close_timeout_ms"] == 10_000
    assert json.loads(attrs["input"]) == ["World"]
    history.complete_activity("1", "Hello, World")
    commands = driver.next_task()
    assert commands == [{"command_type": "CompleteWorkflowExecution", "attributes": {"result": '"Hello, World!"'}}]
    assert driver.runner.finished


@pytest.mark.parametrize("use_asyncio", [False, True])
def test_sleep_is_a_durable_timer(use_asyncio: bool) -> None:
    history = FakeHistory("Sleeper", use_asyncio)
    driver = Driver(Sleeper, history)
    before = time.time() * 1000
    commands = driver.step()
    after = math.ceil(time.time() * 1000)
    # requested_time: the wall clock at the call (rounded up), which history counts the timer from.
    requested = commands[0]["attributes"].pop("requested_time")
    assert before <= requested <= after
    assert commands == [
        {
            "command_type": "StartTimer",
            "attributes": {"timer_id": "1", "start_to_fire_timeout_ms": 90_000 if use_asyncio else 60_000},
        }
    ]
    history.fire_timer("1")
    assert _types(driver.next_task()) == ["CompleteWorkflowExecution"]


@pytest.mark.parametrize("start_time", [None, 1], ids=["before-the-field", "another-start"])
def test_a_replay_never_compares_when_a_timer_counts_from(start_time: int | None) -> None:
    history = FakeHistory("Sleeper", False)
    driver = Driver(Sleeper, history)
    driver.step()
    history.fire_timer("1")
    assert _types(driver.next_task()) == ["CompleteWorkflowExecution"]
    started = next(e for e in history.events if e["event_type"] == "TimerStarted")
    assert started["attributes"]["start_time"] is not None
    if start_time is None:
        del started["attributes"]["start_time"]  # a history written before HistoryEvent v14
    else:
        started["attributes"]["start_time"] = start_time  # not the time this replay's call reads
    assert Replayer(workflows=[Sleeper]).replay(history.events) == []


def test_signal_unblocks_wait_condition_and_query_reads_state() -> None:
    history = FakeHistory("Waiter")
    driver = Driver(Waiter, history)
    assert driver.step() == []
    history.signal("add", "a")
    history.signal("add", "b")
    assert driver.next_task() == []
    assert driver.runner.query("count", []) == 2
    history.signal("finish")
    commands = driver.next_task()
    assert _types(commands) == ["CompleteWorkflowExecution"]
    assert json.loads(commands[0]["attributes"]["result"]) == ["a", "b"]


def test_unknown_query_is_a_clear_error() -> None:
    history = FakeHistory("Waiter")
    driver = Driver(Waiter, history)
    driver.step()
    with pytest.raises(ApplicationError, match="unknown query 'nope'"):
        driver.runner.query("nope", [])


def _completed_greet_history() -> FakeHistory:
    history = FakeHistory("Greet", "World")
    driver = Driver(Greet, history)
    driver.step()
    history.complete_activity("1", "Hello, World")
    driver.next_task()
    return history


def test_full_replay_of_completed_history_produces_no_commands() -> None:
    history = _completed_greet_history()
    assert Replayer(workflows=[Greet]).replay(history.events) == []


def test_changed_workflow_raises_non_determinism_naming_the_mismatch() -> None:
    history = _completed_greet_history()
    with pytest.raises(NonDeterminismError) as caught:
        Replayer(workflows=[GreetChanged]).replay(history.events)
    message = str(caught.value)
    assert "ActivityTaskScheduled(activity_type='compose_greeting')" in message
    assert "ScheduleActivityTask(activity_type='compose_farewell')" in message
    assert "event 5" in message


def test_extra_command_in_replay_is_non_determinism() -> None:
    history = FakeHistory("Sleeper", False)
    history.start_task()
    history.complete_task([])  # the recorded task decided nothing
    with pytest.raises(NonDeterminismError, match="produced command StartTimer"):
        Replayer(workflows=[Sleeper]).replay(history.events)


def test_intermediate_activity_failure_is_ignored_and_final_one_raises() -> None:
    history = FakeHistory("Failing")
    driver = Driver(Failing, history)
    driver.step()
    history.fail_activity("1", "first try", retry_backoff_ms=1000)
    assert driver.next_task() == []  # nothing for the code to see yet
    history.fail_activity("1", "gave up", retry_backoff_ms=None)
    commands = driver.next_task()
    assert json.loads(commands[0]["attributes"]["result"]) == "caught ValueError: gave up"


def test_uncaught_activity_error_fails_the_workflow() -> None:
    history = FakeHistory("Greet", "x")
    driver = Driver(Greet, history)
    driver.step()
    history.fail_activity("1", "boom", retry_backoff_ms=None)
    commands = driver.next_task()
    assert _types(commands) == ["FailWorkflowExecution"]
    failure = commands[0]["attributes"]["failure"]
    assert failure["type"] == "ActivityError"
    assert "boom" in failure["message"]


def test_application_error_fails_workflow_with_failure_record() -> None:
    history = FakeHistory("Rejecting")
    commands = Driver(Rejecting, history).step()
    failure = commands[0]["attributes"]["failure"]
    assert commands[0]["command_type"] == "FailWorkflowExecution"
    assert failure["type"] == "Rejected"
    assert failure["non_retryable"] is True
    assert json.loads(failure["details"]) == [{"why": "because"}]
    assert "nope" in failure["stack_trace"]


def test_other_exceptions_fail_the_workflow_task() -> None:
    history = FakeHistory("Buggy")
    with pytest.raises(WorkflowTaskError) as caught:
        Driver(Buggy, history).step()
    assert isinstance(caught.value.cause, KeyError)


def test_now_random_uuid_identical_across_replays() -> None:
    history = FakeHistory("Deterministic")
    driver = Driver(Deterministic, history)
    driver.step()
    history.fire_timer("1")
    final = driver.next_task()
    result = json.loads(final[0]["attributes"]["result"])
    # now() is the time of each workflow task's WorkflowTaskScheduled
    scheduled = [e for e in history.events if e["event_type"] == "WorkflowTaskScheduled"]
    assert result["first"]["now"].startswith("2023-11-14")
    assert result["first"]["now"] != result["second"]["now"]
    assert result["first"]["rand"] != result["second"]["rand"]
    assert len(scheduled) == 2
    # A fresh replay (new instance, same run id) computes the very same values.
    history.events = history.events[: scheduled[1]["event_id"]]
    history.first_event_id, history.open_task = 1, scheduled[1]["event_id"]
    replayed = new_runner(Deterministic, history).apply(history.task_events())
    assert json.loads(replayed[0].attributes["result"]) == result


def test_now_is_the_started_time_the_worker_was_given_and_replays_agree() -> None:
    history = FakeHistory("Deterministic")
    runner = new_runner(Deterministic, history)
    first_given, second_given = START_MS + 123_456, START_MS + 987_654
    commands = [c.to_json() for c in runner.apply(history.task_events(), started_time_ms=first_given)]
    assert history.open_task is not None
    started = history.add("WorkflowTaskStarted", scheduled_event_id=history.open_task, started_time=first_given)
    history.complete_task(commands, started=started)
    history.fire_timer("1")
    history.schedule_task()
    tail = history.task_events()
    final = runner.apply(tail, started_time_ms=second_given)
    result = json.loads(final[0].attributes["result"])
    assert result["first"]["now"] == datetime.fromtimestamp(first_given / 1000, tz=UTC).isoformat()
    assert result["second"]["now"] == datetime.fromtimestamp(second_given / 1000, tz=UTC).isoformat()
    # A fresh replay takes the first task's time from its WorkflowTaskStarted event.
    replayed = new_runner(Deterministic, history).apply(history.events, started_time_ms=second_given)
    assert json.loads(replayed[0].attributes["result"]) == result
    # A copy of the first task run here at another time is not what history recorded:
    # the runner says so (the worker then replays) instead of keeping its own now().
    duplicate = new_runner(Deterministic, history)
    duplicate.apply(history.events[:2], started_time_ms=first_given + 1)
    with pytest.raises(InconsistentHistoryError, match="history started it at"):
        duplicate.apply(history.events[2:])


def test_events_between_scheduled_and_completed_go_to_next_activation() -> None:
    history = FakeHistory("Waiter")
    driver = Driver(Waiter, history)
    runner = driver.runner
    assert runner.apply(history.task_events()) == []
    started = history.start_task()
    history.signal("finish")  # arrives while the first task is running
    history.complete_task([], started=started)
    history.schedule_task()
    commands = runner.apply(history.task_events())
    assert _types([c.to_json() for c in commands]) == ["CompleteWorkflowExecution"]
    # The full replay agrees: delivering the signal to the first task would have made it
    # complete there, which history contradicts.
    history.complete_task([c.to_json() for c in commands])
    assert Replayer(workflows=[Waiter]).replay(history.events) == []


def test_failed_workflow_task_inputs_carry_over() -> None:
    history = FakeHistory("Waiter")
    history.signal("add", "x")
    history.fail_task()
    history.schedule_task()
    history.signal("finish")  # after the new task was scheduled: the task after that
    runner = new_runner(Waiter, history)
    assert runner.apply(history.task_events()) == []
    assert runner.query("count", []) == 1


def test_incremental_application_equals_full_replay() -> None:
    history = FakeHistory("Waiter")
    driver = Driver(Waiter, history)
    driver.step()
    for item in ("a", "b", "c"):
        history.signal("add", item)
        driver.next_task()
    history.signal("finish")
    history.schedule_task()
    incremental = [c.to_json() for c in driver.runner.apply(history.task_events())]
    history.first_event_id = 1
    full = [c.to_json() for c in new_runner(Waiter, history).apply(history.task_events())]
    assert incremental == full
    assert json.loads(full[0]["attributes"]["result"]) == ["a", "b", "c"]


def test_gap_in_events_is_reported() -> None:
    from kadence._workflow.runner import InconsistentHistoryError

    history = FakeHistory("Waiter")
    runner = new_runner(Waiter, history)
    with pytest.raises(InconsistentHistoryError, match="expected event 1"):
        runner.apply(history.events[1:])
