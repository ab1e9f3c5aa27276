"""A workflow task run ahead by the worker that completed the activity it waited for.

The runner runs the task on the activity's result before history has it; the events
history then hands out must show the same task (one input, the same time, the same
commands), or the runner says the history is not what ran here and the worker replays.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from kadence import workflow
from kadence._workflow.runner import InconsistentHistoryError, RanAhead, WorkflowRunner
from tests.unit._fake_history import START_MS, FakeHistory, new_runner

pytestmark = pytest.mark.timeout(10)

HANDED_MS = START_MS + 50_000  # when the first task was handed out
AHEAD_MS = START_MS + 60_000  # when the worker ran the task ahead


@workflow.defn
class TwoSteps:
    @workflow.run
    async def run(self, name: str) -> dict[str, Any]:
        first = await workflow.execute_activity("first", name, start_to_close_timeout=timedelta(seconds=10))
        at = workflow.now().isoformat()
        second = await workflow.execute_activity("second", first, start_to_close_timeout=timedelta(seconds=10))
        return {"result": second, "at": at}


def _first_task(history: FakeHistory, runner: WorkflowRunner) -> list[dict[str, Any]]:
    """Hand out and complete the first task as history does; its commands."""
    commands = [c.to_json() for c in runner.apply(history.task_events(), started_time_ms=HANDED_MS)]
    assert history.open_task is not None
    started = history.add("WorkflowTaskStarted", scheduled_event_id=history.open_task, started_time=HANDED_MS)
    history.complete_task(commands, started=started)
    return commands


def _record_ahead(history: FakeHistory, ahead: RanAhead, activity_id: str, result: Any) -> None:
    """What history writes when it takes the task: the result, then the task scheduled,
    started by the worker at its time and completed, with nothing handed out."""
    first_event_id = history.first_event_id
    history.complete_activity(activity_id, result)
    scheduled = history.schedule_task()
    started = history.add("WorkflowTaskStarted", scheduled_event_id=scheduled, started_time=ahead.started_time,
                          ran_ahead=True)
    history.complete_task([c.to_json() for c in ahead.commands], started=started)
    history.first_event_id = first_event_id  # the worker still knows only what the first task brought


def _run_ahead(runner: WorkflowRunner, history: FakeHistory, activity_id: str, result: Any) -> RanAhead | None:
    return runner.run_ahead(activity_id=activity_id, scheduled_event_id=history.activity_scheduled_id(activity_id),
                            result=json.dumps(result), time_ms=AHEAD_MS)


def test_a_task_run_ahead_and_recorded_is_taken_as_run_and_replays_the_same() -> None:
    history = FakeHistory("TwoSteps", "x")
    runner = new_runner(TwoSteps, history)
    _first_task(history, runner)
    ahead = _run_ahead(runner, history, "1", "one")
    assert ahead is not None
    assert (ahead.after_scheduled_event_id, ahead.after_started_time, ahead.started_time) == (2, HANDED_MS, AHEAD_MS)
    assert [c.command_type for c in ahead.commands] == ["ScheduleActivityTask"]
    assert json.loads(ahead.commands[0].attributes["input"]) == ["one"]
    assert _run_ahead(runner, history, "1", "one") is None  # one task ahead at a time
    _record_ahead(history, ahead, "1", "one")
    history.complete_activity("2", "two")
    history.schedule_task()
    final = runner.apply(history.task_events(), started_time_ms=AHEAD_MS + 5)
    result = json.loads(final[0].attributes["result"])
    assert result["result"] == "two" and result["at"].startswith("2023-11-14T22:14:20")
    # A replay from the full history decides the same, with the time the task ran ahead at.
    replayed = new_runner(TwoSteps, history).apply(history.events, started_time_ms=AHEAD_MS + 5)
    assert json.loads(replayed[0].attributes["result"]) == result


def test_a_signal_before_the_result_means_history_did_not_take_the_task() -> None:
    history = FakeHistory("TwoSteps", "x")
    runner = new_runner(TwoSteps, history)
    _first_task(history, runner)
    assert _run_ahead(runner, history, "1", "one") is not None
    history.signal("unrelated")
    history.complete_activity("1", "one")
    history.schedule_task()
    with pytest.raises(InconsistentHistoryError, match="brings input events 6 WorkflowExecutionSignaled, 8 ActivityTaskCompleted, but ran ahead here on the result of activity 5 alone"):
        runner.apply(history.task_events(), started_time_ms=AHEAD_MS + 5)


def test_the_same_task_handed_out_instead_of_recorded_is_not_taken_as_run() -> None:
    history = FakeHistory("TwoSteps", "x")
    runner = new_runner(TwoSteps, history)
    _first_task(history, runner)
    assert _run_ahead(runner, history, "1", "one") is not None
    history.complete_activity("1", "one")
    history.schedule_task()
    with pytest.raises(InconsistentHistoryError, match="handed it out instead of recording it"):
        runner.apply(history.task_events(), started_time_ms=AHEAD_MS + 5)


def test_only_a_runner_that_just_ran_a_task_live_runs_ahead() -> None:
    history = FakeHistory("TwoSteps", "x")
    _first_task(history, new_runner(TwoSteps, history))
    replaying = new_runner(TwoSteps, history)
    history.first_event_id = 1
    replaying.apply(history.events, run_live=False)
    assert _run_ahead(replaying, history, "1", "one") is None


def test_a_task_run_ahead_never_runs_at_an_earlier_time_than_the_one_before() -> None:
    history = FakeHistory("TwoSteps", "x")
    runner = new_runner(TwoSteps, history)
    _first_task(history, runner)
    ahead = runner.run_ahead(activity_id="1", scheduled_event_id=history.activity_scheduled_id("1"),
                             result=json.dumps("one"), time_ms=HANDED_MS - 1000)
    assert ahead is not None and ahead.started_time == HANDED_MS


def test_attempts_that_were_retried_do_not_stand_in_the_way() -> None:
    history = FakeHistory("TwoSteps", "x")
    runner = new_runner(TwoSteps, history)
    _first_task(history, runner)
    ahead = _run_ahead(runner, history, "1", "one")
    assert ahead is not None
    history.fail_activity("1", "flaky", retry_backoff_ms=100)
    _record_ahead(history, ahead, "1", "one")
    history.complete_activity("2", "two")
    history.schedule_task()
    final = runner.apply(history.task_events(), started_time_ms=AHEAD_MS + 5)
    assert json.loads(final[0].attributes["result"])["result"] == "two"
