"""A user timer counts from the workflow code's call (services/history/timer_start.py): the
clamp of the command's requested_time, what TimerStarted records, and the fold with and
without that field. No I/O: engine operations on in-memory runs."""

from __future__ import annotations

from typing import Any

import pytest

from kadence_protocol import avro
from services.common import validation
from services.history import engine, timer_start
from services.history.state import MutableState, WorkflowTaskInfo, apply, rebuild
from tests.unit import _answers as answers
from tests.unit.services.history.test_state import MemoryContext, _ref, _start

pytestmark = pytest.mark.timeout(10)
T0 = 1_700_000_000_000  # MemoryContext's clock at the start


def _timer(requested: int | None = None, duration: int = 1000, timer_id: str = "1") -> dict[str, Any]:
    attributes: dict[str, Any] = {"timer_id": timer_id, "start_to_fire_timeout_ms": duration}
    if requested is not None:
        attributes["requested_time"] = requested
    return {"command_type": "StartTimer", "attributes": attributes}


async def _started_timer(requested: int | None, *, answered_after: int = 50) -> tuple[MemoryContext, MutableState]:
    """A run whose first task (scheduled at T0) is answered ``answered_after`` ms later with one timer."""
    ctx = MemoryContext()
    await engine.start_workflow(ctx, _start())
    s = next(iter(ctx.runs.values()))
    ctx.now = T0 + answered_after
    await answers.workflow_task_completed(ctx, _ref(s, 2) | {"commands": [_timer(requested)]})
    return ctx, s


def _timer_started(ctx: MemoryContext, s: MutableState) -> dict[str, Any]:
    return next(e for e in ctx.events(s.run_id) if e["event_type"] == "TimerStarted")


def _armed(ctx: MemoryContext) -> list[int]:
    return [row[1] for t in ctx.transitions for row in t.timers_upsert.values() if row[5] == "user_timer"]


def test_the_clamp_keeps_a_requested_time_between_the_task_and_the_record() -> None:
    assert timer_start.start_time(150, 100, 200) == 150
    assert timer_start.start_time(900, 100, 200) == 200  # a worker clock ahead: never in the future
    assert timer_start.start_time(10, 100, 200) == 100  # behind, or lying: never before the task
    assert timer_start.start_time(None, 100, 200) is None  # no requested time: from the record
    assert timer_start.start_time(150, 300, 200) == 200  # a floor past the record time never wins


def test_the_floor_is_the_scheduled_time_or_a_run_ahead_tasks_own_time() -> None:
    handed = WorkflowTaskInfo(scheduled_event_id=2, attempt=1, scheduled_time=100, started_event_id=3,
                              started_time=120, handed_time=110)
    assert timer_start.task_floor(handed) == 100
    ahead = WorkflowTaskInfo(scheduled_event_id=8, attempt=1, scheduled_time=200, started_event_id=9,
                             started_time=200, handed_time=150, ran_ahead_id=7)
    assert timer_start.task_floor(ahead) == 150


async def test_a_timer_runs_from_the_requested_time_within_the_bounds() -> None:
    ctx, s = await _started_timer(T0 + 20)
    started = _timer_started(ctx, s)
    assert started["event_time"] == T0 + 50 and started["attributes"]["start_time"] == T0 + 20
    assert s.timers["1"].fire_at == T0 + 20 + 1000
    assert _armed(ctx) == [T0 + 20 + 1000]  # the row the timer queue fires


async def test_a_requested_time_ahead_of_history_starts_the_timer_at_the_record() -> None:
    ctx, s = await _started_timer(T0 + 60_000)
    assert _timer_started(ctx, s)["attributes"]["start_time"] == T0 + 50
    assert s.timers["1"].fire_at == T0 + 50 + 1000 and _armed(ctx) == [T0 + 1050]


async def test_a_requested_time_before_the_task_starts_the_timer_at_the_tasks_schedule() -> None:
    ctx, s = await _started_timer(T0 - 3_600_000)
    assert _timer_started(ctx, s)["attributes"]["start_time"] == T0  # the task was scheduled at T0
    assert s.timers["1"].fire_at == T0 + 1000 and _armed(ctx) == [T0 + 1000]


async def test_without_a_requested_time_the_timer_runs_from_the_record() -> None:
    ctx, s = await _started_timer(None)
    assert _timer_started(ctx, s)["attributes"].get("start_time") is None
    assert s.timers["1"].fire_at == T0 + 50 + 1000 and _armed(ctx) == [T0 + 1050]


async def test_the_fold_of_the_events_through_avro_gives_the_live_state() -> None:
    ctx, s = await _started_timer(T0 + 20)
    events = [avro.decode(avro.encode("HistoryEvent", e))[1] for e in ctx.events(s.run_id)]
    assert next(e for e in events if e["event_type"] == "TimerStarted")["attributes"]["start_time"] == T0 + 20
    assert rebuild("ns", "wf", s.run_id, events).dumps() == s.dumps()


def _fold_timer_started(attributes: dict[str, Any]) -> int:
    s = MutableState(run_id="r")
    apply(s, {"event_id": 1, "event_time": 5000, "event_type": "MarkerRecorded", "attributes": {
        "marker_name": "m", "details": None, "workflow_task_completed_event_id": 0}})
    apply(s, {"event_id": 2, "event_time": 5000, "event_type": "TimerStarted", "attributes": {
        "timer_id": "t", "start_to_fire_timeout_ms": 1000, "workflow_task_completed_event_id": 1, **attributes}})
    return s.timers["t"].fire_at


def test_the_fold_fires_from_start_time_or_else_the_event_time() -> None:
    assert _fold_timer_started({"start_time": 4980}) == 5980
    assert _fold_timer_started({"start_time": None}) == 6000
    assert _fold_timer_started({}) == 6000  # an event written before the field


@pytest.mark.parametrize("requested", ["soon", -1, 1.5])
def test_a_requested_time_that_is_no_time_is_refused(requested: object) -> None:
    command = {"command_type": "StartTimer", "attributes": {"timer_id": "t", "start_to_fire_timeout_ms": 5,
                                                            "requested_time": requested}}
    with pytest.raises(validation.Invalid) as caught:
        validation.commands([command], "commands")
    assert caught.value.field == "commands[0].attributes.requested_time"
    validation.commands([{**command, "attributes": {**command["attributes"], "requested_time": None}}], "commands")
    validation.commands([{**command, "attributes": {**command["attributes"], "requested_time": T0}}], "commands")


_ACTIVITY = {"command_type": "ScheduleActivityTask", "attributes": {
    "activity_id": "1", "activity_type": "a", "task_queue": "", "input": "[1]", "schedule_to_close_timeout_ms": 0,
    "schedule_to_start_timeout_ms": 0, "start_to_close_timeout_ms": 9_000, "heartbeat_timeout_ms": 0,
    "retry_policy": None}}


@pytest.mark.parametrize(("requested", "expected"), [(T0 + 80, T0 + 80), (T0 + 30, T0 + 60)],
                         ids=["within", "before-the-task"])
async def test_a_task_run_ahead_bounds_its_timers_by_its_own_time(requested: int, expected: int) -> None:
    """Its scheduled event is written with the answer (at the record time): the floor is
    the task's time, which history checked against the activity's schedule and its clock."""
    ctx = MemoryContext()
    await engine.start_workflow(ctx, _start())
    s = next(iter(ctx.runs.values()))
    await answers.workflow_task_completed(ctx, _ref(s, 2) | {"commands": [_ACTIVITY], "started_time": T0})
    sid = next(e["event_id"] for e in ctx.events(s.run_id) if e["event_type"] == "ActivityTaskScheduled")
    await answers.activity_started(ctx, _ref(s, sid))
    ctx.now = T0 + 100
    ahead = {"ahead_id": 7, "after_ahead_id": 0, "after_scheduled_event_id": 2, "after_started_time": T0,
             "started_time": T0 + 60, "commands": [_timer(requested)]}
    await answers.activity_completed(ctx, _ref(s, sid) | {"result": "1", "workflow_task": ahead})
    started = _timer_started(ctx, s)
    assert started["event_time"] == T0 + 100 and started["attributes"]["start_time"] == expected
    assert s.timers["1"].fire_at == expected + 1000 and _armed(ctx) == [expected + 1000]
