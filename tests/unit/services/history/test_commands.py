"""services/history/commands.py: a workflow task whose commands would give two pending
activities one activity id, or two pending timers one timer id, fails (BadCommand) and
records none of them; ids free again once the activity or timer is over are taken."""

from __future__ import annotations

from typing import Any

import pytest

from services.history import engine
from services.history.shard import HANDLERS
from services.history.state import MutableState
from tests.unit import _answers as answers
from tests.unit.services.history.test_state import MemoryContext, _ref, _start

pytestmark = pytest.mark.timeout(10)


def _activity(activity_id: str) -> dict[str, Any]:
    return {"command_type": "ScheduleActivityTask", "attributes": {
        "activity_id": activity_id, "activity_type": "a", "task_queue": "", "input": "[]",
        "schedule_to_close_timeout_ms": 0, "schedule_to_start_timeout_ms": 0, "start_to_close_timeout_ms": 60_000,
        "heartbeat_timeout_ms": 0, "retry_policy": None}}


def _timer(timer_id: str) -> dict[str, Any]:
    return {"command_type": "StartTimer", "attributes": {"timer_id": timer_id, "start_to_fire_timeout_ms": 60_000}}


_SIGNAL = {"namespace": "ns", "workflow_id": "wf", "run_id": None, "signal_name": "s", "input": None,
           "identity": "", "request_id": "", "reply_to": None}


async def _run(ctx: MemoryContext, commands: list[dict[str, Any]]) -> MutableState:
    await engine.start_workflow(ctx, _start())
    s = next(iter(ctx.runs.values()))
    await answers.workflow_task_completed(ctx, _ref(s, 2) | {"commands": commands})
    return s


async def _complete_next(ctx: MemoryContext, s: MutableState, commands: list[dict[str, Any]], n: int) -> str:
    """Signal the run for a new task, complete it with ``commands``; the last event's type."""
    await HANDLERS["SignalWorkflowExecution"](ctx, _SIGNAL | {"request_id": f"sig-{n}"})
    assert s.wt is not None
    await answers.workflow_task_completed(ctx, _ref(s, s.wt.scheduled_event_id) | {"commands": commands})
    return str(ctx.events(s.run_id)[-1]["event_type"])


def _failure(ctx: MemoryContext, s: MutableState) -> dict[str, Any]:
    failed = [e for e in ctx.events(s.run_id) if e["event_type"] == "WorkflowTaskFailed"]
    return dict(failed[-1]["attributes"])


async def test_two_activities_of_one_task_with_one_id_fail_the_task() -> None:
    ctx = MemoryContext()
    s = await _run(ctx, [_activity("a"), _activity("a")])
    failed = _failure(ctx, s)
    assert failed["cause"] == "BadCommand" and "activity_id 'a' is in use" in failed["failure"]["message"]
    assert not s.activities


@pytest.mark.parametrize("again, message", [
    (_activity("a"), "activity_id 'a' is in use by a pending activity"),
    (_timer("t"), "timer_id 't' is in use by a pending timer")])
async def test_an_activity_id_or_timer_id_in_use_by_a_pending_one_fails_the_task(again: dict[str, Any],
                                                                                  message: str) -> None:
    ctx = MemoryContext()
    s = await _run(ctx, [_activity("a"), _timer("t")])
    assert len(s.activities) == 1 and list(s.timers) == ["t"]
    assert await _complete_next(ctx, s, [again], 1) == "WorkflowTaskFailed"
    assert message in _failure(ctx, s)["failure"]["message"]
    assert len(s.activities) == 1 and list(s.timers) == ["t"]
    assert s.wt is not None  # the next attempt may send other commands
    await answers.workflow_task_completed(ctx, _ref(s, s.wt.scheduled_event_id, s.wt.attempt) | {
        "commands": [_activity("b"), _timer("u")]})
    assert len(s.activities) == 2 and sorted(s.timers) == ["t", "u"]
