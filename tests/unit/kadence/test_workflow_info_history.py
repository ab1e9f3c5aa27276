"""workflow.info()'s history fields (length, size, continue-as-new suggested) come from each
task's WorkflowTaskScheduled, identically live and on replay, also for a task run ahead
(which sees what the task before it saw, as its worker did)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from kadence import workflow
from tests.unit._fake_history import FakeHistory, new_runner
from tests.unit.kadence._workflow.test_run_ahead import AHEAD_MS, _first_task, _record_ahead, _run_ahead

pytestmark = pytest.mark.timeout(10)


@workflow.defn
class SeesHistory:
    @workflow.run
    async def run(self) -> list[list[Any]]:
        seen = []
        for step in ("first", "second"):
            info = workflow.info()
            seen.append([info.history_length, info.history_size, info.continue_as_new_suggested])
            await workflow.execute_activity(step, start_to_close_timeout=timedelta(seconds=10))
        info = workflow.info()
        seen.append([info.history_length, info.history_size, info.continue_as_new_suggested])
        return seen


def _mark(history: FakeHistory, size: int, suggested: bool) -> None:
    """What history writes in the WorkflowTaskScheduled just added."""
    history.events[-1]["attributes"].update(history_size_bytes=size, suggest_continue_as_new=suggested)


def test_each_task_sees_its_own_scheduled_event_and_a_replay_agrees() -> None:
    history = FakeHistory("SeesHistory")
    runner = new_runner(SeesHistory, history)
    _first_task(history, runner)
    history.complete_activity("1", None)
    history.schedule_task()
    _mark(history, 900, True)
    second = history.open_task
    commands = [c.to_json() for c in runner.apply(history.task_events(), started_time_ms=AHEAD_MS)]
    history.complete_task(commands)
    history.complete_activity("2", None)
    history.schedule_task()
    final = runner.apply(history.task_events(), started_time_ms=AHEAD_MS + 5)
    seen = json.loads(final[0].attributes["result"])
    assert seen[0] == [2, 0, False] and seen[1] == [second, 900, True]
    replayed = new_runner(SeesHistory, history).apply(history.events, started_time_ms=AHEAD_MS + 5)
    assert json.loads(replayed[0].attributes["result"]) == seen


def test_a_task_run_ahead_sees_the_task_before_it_live_and_on_replay() -> None:
    history = FakeHistory("SeesHistory")
    runner = new_runner(SeesHistory, history)
    _first_task(history, runner)
    ahead = _run_ahead(runner, history, "1", None)
    assert ahead is not None
    _record_ahead(history, ahead, "1", None)
    scheduled = next(e for e in reversed(history.events) if e["event_type"] == "WorkflowTaskScheduled")
    scheduled["attributes"].update(history_size_bytes=900, suggest_continue_as_new=True)  # what history knew
    history.complete_activity("2", None)
    history.schedule_task()
    _mark(history, 1200, True)
    final = runner.apply(history.task_events(), started_time_ms=AHEAD_MS + 5)
    seen = json.loads(final[0].attributes["result"])
    assert seen[0] == seen[1] == [2, 0, False]  # the run-ahead task saw the first task's values
    assert seen[2][1:] == [1200, True]
    replayed = new_runner(SeesHistory, history).apply(history.events, started_time_ms=AHEAD_MS + 5)
    assert json.loads(replayed[0].attributes["result"]) == seen
