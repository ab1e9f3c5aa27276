"""workflow.info() (history length, continue-as-new suggestion) and
workflow.side_effect: the same values live, in a replay, and in a task run ahead."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from kadence import workflow
from kadence.exceptions import WorkflowTaskError
from kadence.replay import Replayer
from kadence.testing import WorkflowEnvironment
from tests.unit._fake_history import Driver, FakeHistory, new_runner

pytestmark = pytest.mark.timeout(30)


@workflow.defn
class Lengths:
    @workflow.run
    async def run(self) -> list[Any]:
        seen: list[Any] = []
        for _ in range(2):
            info = workflow.info()
            seen.append([info.history_length, info.continue_as_new_suggested])
            await workflow.execute_activity("a", start_to_close_timeout=timedelta(seconds=5))
        seen.append(workflow.info().history_length)
        return seen


def test_history_length_is_the_tasks_scheduled_event_and_replays_the_same() -> None:
    history = FakeHistory("Lengths")
    driver = Driver(Lengths, history)
    driver.step()
    history.complete_activity("1", None)
    driver.next_task()
    history.complete_activity("2", None)
    [done] = driver.next_task()
    result = json.loads(done["attributes"]["result"])
    scheduled = [e["event_id"] for e in history.events if e["event_type"] == "WorkflowTaskScheduled"]
    assert result == [[scheduled[0], False], [scheduled[1], False], scheduled[2]]
    replayed = new_runner(Lengths, history)
    replayed.apply(history.events)
    assert replayed.instance.history_length == scheduled[2]


def test_a_task_run_ahead_keeps_its_predecessors_history_length_in_a_replay_too() -> None:
    history = FakeHistory("Lengths")
    runner = new_runner(Lengths, history)
    commands = [c.to_json() for c in runner.apply(history.task_events())]
    history.complete_task(commands)
    first_scheduled = 2
    ahead = runner.run_ahead(activity_id="1", scheduled_event_id=history.activity_scheduled_id("1"), result="null",
                             time_ms=history.time_ms + 10, ahead_id=9)
    assert ahead is not None
    assert runner.instance.history_length == first_scheduled
    # History takes the task run ahead as it does (tests/unit/kadence/_workflow/test_run_ahead.py).
    history.complete_activity("1", None)
    scheduled = history.schedule_task()
    started = history.add("WorkflowTaskStarted", scheduled_event_id=scheduled, started_time=ahead.started_time,
                          ran_ahead_id=9)
    history.complete_task([c.to_json() for c in ahead.commands], started=started)
    history.complete_activity("2", None)
    history.schedule_task()
    replayed = new_runner(Lengths, history)
    [done] = [c.to_json() for c in replayed.apply(history.events)]
    result = json.loads(done["attributes"]["result"])
    assert result[1][0] == first_scheduled  # the task run ahead: its predecessor's value
    assert result[2] == history.open_task  # the last task, handed out: its own


calls = itertools.count(1)


@dataclass
class Token:
    value: int


def _draw() -> Token:
    return Token(next(calls))


@workflow.defn
class SideEffects:
    @workflow.run
    async def run(self) -> list[int]:
        first = workflow.side_effect(_draw)
        assert isinstance(first, Token)
        await workflow.sleep(10)
        second = workflow.side_effect(lambda: next(calls), result_type=int)
        return [first.value, second]


def test_side_effect_runs_once_and_replays_the_recorded_value() -> None:
    history = FakeHistory("SideEffects")
    driver = Driver(SideEffects, history)
    [marker, _timer] = driver.step()
    assert marker["command_type"] == "RecordMarker" and marker["attributes"]["marker_name"] == "side_effect:1"
    history.fire_timer("1")
    [marker2, done] = driver.next_task()
    expected = [json.loads(marker["attributes"]["details"])["value"], json.loads(marker2["attributes"]["details"])]
    assert json.loads(done["attributes"]["result"]) == expected
    before = next(calls)
    Replayer(workflows=[SideEffects]).replay(history.events)  # checks the result against history
    assert next(calls) == before + 1  # the replay called neither function


@workflow.defn(name="Added")
class WithoutSideEffect:
    @workflow.run
    async def run(self) -> int:
        await workflow.sleep(10)
        return 0


@workflow.defn(name="Added")
class SideEffectAdded:
    @workflow.run
    async def run(self) -> int:
        value = workflow.side_effect(lambda: 1, result_type=int)
        await workflow.sleep(10)
        return value


def test_a_side_effect_with_no_recorded_value_is_non_determinism() -> None:
    history = FakeHistory("Added")
    Driver(WithoutSideEffect, history).step()
    with pytest.raises(WorkflowTaskError, match="side effect 1, but history records no value"):
        Replayer(workflows=[SideEffectAdded]).replay(history.events)


async def test_side_effect_and_info_in_the_test_environment() -> None:
    async with WorkflowEnvironment(workflows=[SideEffects]) as env:
        handle = await env.start_workflow(SideEffects.run, id="se")
        values = await handle.result()
        assert len(values) == 2 and values[0] < values[1]
        markers = [e for e in await handle.history() if e["event_type"] == "MarkerRecorded"]
        assert [m["attributes"]["marker_name"] for m in markers] == ["side_effect:1", "side_effect:2"]


@workflow.defn
class TaskAttempt:
    @workflow.run
    async def run(self) -> int:
        return workflow.info().workflow_task_attempt


def test_the_workflow_task_attempt_is_its_scheduled_events_live_and_in_a_replay() -> None:
    """A failing task's later attempt brings the WorkflowTaskScheduled history writes only if
    it completes (services/history/transient.py): its attempt is workflow.info()'s."""
    history = FakeHistory("TaskAttempt")
    history.fail_task()
    scheduled = history.add("WorkflowTaskScheduled", task_queue="tq", start_to_close_timeout_ms=10000, attempt=4)
    history.open_task = scheduled
    runner = new_runner(TaskAttempt, history)
    [done] = [c.to_json() for c in runner.apply(history.events)]
    assert json.loads(done["attributes"]["result"]) == 4
    history.complete_task([done])
    replayed = new_runner(TaskAttempt, history)
    replayed.apply(history.events)
    assert replayed.instance.info().workflow_task_attempt == 4
