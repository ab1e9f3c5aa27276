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
class ThreeSteps:
    @workflow.run
    async def run(self, name: str) -> str:
        result = name
        for step in ("first", "second", "third"):
            result = await workflow.execute_activity(step, result, start_to_close_timeout=timedelta(seconds=10))
        return result


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
                          ran_ahead_id=ahead.ahead_id)
    history.complete_task([c.to_json() for c in ahead.commands], started=started)
    history.first_event_id = first_event_id  # the worker still knows only what the first task brought


def _ran_ahead_once(*, ahead_id: int = 7, time_ms: int = AHEAD_MS) -> tuple[FakeHistory, WorkflowRunner, RanAhead]:
    """A TwoSteps run whose first task ran live, and whose second ran ahead on activity 1."""
    history = FakeHistory("TwoSteps", "x")
    runner = new_runner(TwoSteps, history)
    _first_task(history, runner)
    ahead = _run_ahead(runner, history, "1", "one", ahead_id=ahead_id, time_ms=time_ms)
    assert ahead is not None
    return history, runner, ahead


def _run_ahead(runner: WorkflowRunner, history: FakeHistory, activity_id: str, result: Any, *,
               ahead_id: int = 7, time_ms: int = AHEAD_MS) -> RanAhead | None:
    return runner.run_ahead(activity_id=activity_id, scheduled_event_id=history.activity_scheduled_id(activity_id),
                            result=json.dumps(result), time_ms=time_ms, ahead_id=ahead_id)


def test_a_task_run_ahead_and_recorded_is_taken_as_run_and_replays_the_same() -> None:
    history, runner, ahead = _ran_ahead_once()
    assert (ahead.ahead_id, ahead.after_ahead_id, ahead.after_scheduled_event_id, ahead.after_started_time,
            ahead.started_time) == (7, 0, 2, HANDED_MS, AHEAD_MS)
    assert [c.command_type for c in ahead.commands] == ["ScheduleActivityTask"]
    assert json.loads(ahead.commands[0].attributes["input"]) == ["one"]
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
    history, runner, _ = _ran_ahead_once()
    history.signal("unrelated")
    history.complete_activity("1", "one")
    history.schedule_task()
    with pytest.raises(InconsistentHistoryError, match="brings input events 6 WorkflowExecutionSignaled, 8 ActivityTaskCompleted, but ran ahead here on the result of activity 5 alone"):
        runner.apply(history.task_events(), started_time_ms=AHEAD_MS + 5)


def test_the_same_task_handed_out_instead_of_recorded_is_not_taken_as_run() -> None:
    history, runner, _ = _ran_ahead_once()
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
    _, _, ahead = _ran_ahead_once(time_ms=HANDED_MS - 1000)
    assert ahead.started_time == HANDED_MS


def test_attempts_that_were_retried_do_not_stand_in_the_way() -> None:
    history, runner, ahead = _ran_ahead_once()
    history.fail_activity("1", "flaky", retry_backoff_ms=100)
    _record_ahead(history, ahead, "1", "one")
    history.complete_activity("2", "two")
    history.schedule_task()
    final = runner.apply(history.task_events(), started_time_ms=AHEAD_MS + 5)
    assert json.loads(final[0].attributes["result"])["result"] == "two"


def test_tasks_run_ahead_one_after_another_are_met_in_order_by_the_next_task_handed_out() -> None:
    history = FakeHistory("ThreeSteps", "x")
    runner = new_runner(ThreeSteps, history)
    _first_task(history, runner)
    first = _run_ahead(runner, history, "1", "x1", ahead_id=11)
    assert first is not None
    _record_ahead(history, first, "1", "x1")
    second = _run_ahead(runner, history, "2", "x2", ahead_id=22, time_ms=AHEAD_MS + 10)
    assert second is not None
    # It follows the task run ahead before it, which it names by id (history numbered it,
    # but this runner has not seen that yet).
    assert (second.after_ahead_id, second.after_scheduled_event_id, second.after_started_time) == (11, 0, AHEAD_MS)
    assert json.loads(second.commands[0].attributes["input"]) == ["x2"]
    _record_ahead(history, second, "2", "x2")
    history.complete_activity("3", "x3")
    history.schedule_task()
    final = runner.apply(history.task_events(), started_time_ms=AHEAD_MS + 20)
    assert final[0].attributes["result"] == '"x3"'
    replayed = new_runner(ThreeSteps, history).apply(history.events, started_time_ms=AHEAD_MS + 20)
    assert [c.to_json() for c in replayed] == [c.to_json() for c in final]


def test_a_task_run_ahead_recorded_under_another_id_is_not_taken_as_run() -> None:
    history, runner, ahead = _ran_ahead_once(ahead_id=5)
    _record_ahead(history, ahead._replace(ahead_id=6), "1", "one")  # another worker's, at the same time
    history.complete_activity("2", "two")
    history.schedule_task()
    with pytest.raises(InconsistentHistoryError, match="records another start"):
        runner.apply(history.task_events(), started_time_ms=AHEAD_MS + 5)


@pytest.mark.parametrize(("ahead", "state", "taken"), [
    ({}, {}, True),
    ({"after_scheduled_event_id": 5}, {}, False),  # not the last completed task
    ({"after_started_time": HANDED_MS + 1}, {}, False),  # that task, but another start of it
    ({}, {"inputs_pending": True}, False),  # a signal (say) waits: the task would see it too
    ({}, {"wt_failures": 1}, False),
    ({"started_time": HANDED_MS - 1}, {}, False),  # time would run backwards
    ({"started_time": AHEAD_MS + 1}, {}, False),  # ahead of history's clock
    ({"after_ahead_id": 3, "after_scheduled_event_id": 0}, {"last_completed_wt_ahead_id": 3}, True),
    ({"after_ahead_id": 4, "after_scheduled_event_id": 0}, {"last_completed_wt_ahead_id": 3}, False),
    ({}, {"last_completed_wt_ahead_id": 3}, False),  # the last task ran ahead, the worker ran another
])
def test_history_takes_a_task_run_ahead_only_on_the_task_it_followed(
        ahead: dict[str, Any], state: dict[str, Any], taken: bool) -> None:
    from types import SimpleNamespace

    from kadence_protocol.records import RunAheadWorkflowTask
    from services.history.builder import Transition
    from services.history.engine import may_run_ahead
    from services.history.state import MutableState

    s = MutableState(status="Running", last_completed_wt_scheduled_id=2, last_completed_wt_started_time=HANDED_MS)
    for name, value in state.items():
        setattr(s, name, value)
    claim = {"after_scheduled_event_id": 2, "after_started_time": HANDED_MS, "started_time": AHEAD_MS,
             "ahead_id": 9, "after_ahead_id": 0, **ahead}
    ctx: Any = SimpleNamespace(now=AHEAD_MS)
    # since: the activity's scheduling
    t = Transition(s, AHEAD_MS, 0)
    assert may_run_ahead(ctx, t, HANDED_MS + 10, RunAheadWorkflowTask.from_dict(claim)) is taken
