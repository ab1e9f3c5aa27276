"""Timer run-ahead in history (services/history/timer_ahead.py): the grace a worker that runs
timers ahead gets, and when history records the task it ran on a timer's firing. No I/O:
engine operations on in-memory runs."""

from __future__ import annotations

from typing import Any

import pytest

from kadence_protocol import avro, records
from services.common import validation
from services.history import engine
from services.history.builder import Transition
from services.history.limits import DEFAULT_HISTORY_LIMITS, HistoryLimits
from services.history.shard import HANDLERS
from services.history.state import MutableState, rebuild
from services.history.timer_ahead import CLOCK_AHEAD_MS
from tests.unit import _answers as answers
from tests.unit.services.history.test_state import MemoryContext, _ref, _signal_request, _start

pytestmark = pytest.mark.timeout(10)
GRACE = 300
T0 = 1_700_000_000_000
COMPLETE = {"command_type": "CompleteWorkflowExecution", "attributes": {"result": '"done"'}}
timer_ran_ahead = HANDLERS["RespondTimerRunAhead"]


class GraceContext(MemoryContext):
    """The shard's transitions carry the grace its settings give."""

    limits = DEFAULT_HISTORY_LIMITS

    def _t(self, state: MutableState) -> Transition:
        t = super()._t(state)
        t.timer_ahead_grace_ms = GRACE
        t.history_limits = self.limits
        return t


def _timer(timer_id: str = "1", duration: int = 1000) -> dict[str, Any]:
    return {"command_type": "StartTimer", "attributes": {"timer_id": timer_id, "start_to_fire_timeout_ms": duration,
                                                         "requested_time": T0}}


async def _sleeping(*timers: dict[str, Any], runs_timers_ahead: bool = True) -> tuple[GraceContext, MutableState]:
    """A run whose first task, answered at T0 + 10 by a worker that runs timers ahead, starts ``timers``."""
    ctx = GraceContext()
    await engine.start_workflow(ctx, _start())
    s = next(iter(ctx.runs.values()))
    ctx.now = T0 + 10
    await answers.workflow_task_completed(ctx, _ref(s, 2) | {
        "commands": list(timers or [_timer()]), "started_time": T0 + 5, "runs_timers_ahead": runs_timers_ahead})
    return ctx, s


def _ahead(started_time: int, commands: list[dict[str, Any]] | None = None, **kw: Any) -> dict[str, Any]:
    return {"ahead_id": 42, "after_ahead_id": 0, "after_scheduled_event_id": 2, "after_started_time": T0 + 5,
            "started_time": started_time, "commands": [COMPLETE] if commands is None else commands, **kw}


def _request(s: MutableState, timer_id: str = "1", **kw: Any) -> dict[str, Any]:
    return _ref(s, 2) | {"timer_id": timer_id, "workflow_task": _ahead(**kw)}


def _kinds(ctx: MemoryContext, s: MutableState) -> list[str]:
    return [e["event_type"] for e in ctx.events(s.run_id)]


def _user_rows(ctx: MemoryContext) -> list[int]:
    return [row[1] for t in ctx.transitions for row in t.timers_upsert.values() if row[5] == "user_timer"]


async def test_a_timer_started_by_a_worker_that_runs_timers_ahead_is_held_for_the_grace() -> None:
    ctx, s = await _sleeping()
    assert s.timers["1"].fire_at == T0 + 1000  # the run's state keeps the fire time itself
    assert _user_rows(ctx) == [T0 + 1000 + GRACE]  # the row history fires by itself


async def test_a_timer_of_a_worker_that_does_not_run_timers_ahead_fires_on_time() -> None:
    ctx, _ = await _sleeping(runs_timers_ahead=False)
    assert _user_rows(ctx) == [T0 + 1000]


async def test_the_task_run_on_the_firing_is_recorded_with_the_firing_in_one_transition() -> None:
    ctx, s = await _sleeping()
    ctx.now = T0 + 1003
    before = len(ctx.transitions)
    await timer_ran_ahead(ctx, _request(s, started_time=T0 + 1001))
    (t,) = ctx.transitions[before:]
    assert [e["event_type"] for e in t.events] == [
        "TimerFired", "WorkflowTaskScheduled", "WorkflowTaskStarted", "WorkflowTaskCompleted",
        "WorkflowExecutionCompleted"]
    fired, _, started, _, _ = t.events
    assert fired["attributes"]["timer_id"] == "1" and fired["attributes"]["started_event_id"] == 5
    assert started["attributes"]["ran_ahead_id"] == 42 and started["attributes"]["started_time"] == T0 + 1001
    assert f"{s.run_id}/user_timer/1" in t.timers_delete
    assert s.wt is None and not t.local_tasks and not t.outbox  # no task is dispatched
    assert not s.running and not s.timers
    assert rebuild("ns", "wf", s.run_id, ctx.events(s.run_id)).dumps() == s.dumps()


async def test_history_firing_the_timer_after_it_was_run_ahead_changes_nothing() -> None:
    ctx, s = await _sleeping(_timer("1"), _timer("2", 5000))
    ctx.now = T0 + 1003
    await timer_ran_ahead(ctx, _request(s, started_time=T0 + 1001, commands=[]))
    assert f"{s.run_id}/user_timer/1" in ctx.transitions[-1].timers_delete  # the row goes in the same commit
    assert f"{s.run_id}/user_timer/2" not in ctx.transitions[-1].timers_delete
    kinds = _kinds(ctx, s)
    started = next(e["event_id"] for e in ctx.events(s.run_id) if e["event_type"] == "TimerStarted")
    ctx.now = T0 + 1000 + GRACE
    await engine.fire_timer(ctx, engine.TimerFiring("k", T0 + 1000 + GRACE, "ns", "wf", s.run_id, "user_timer",
                                                    started, 0))
    assert _kinds(ctx, s) == kinds and s.wt is None and list(s.timers) == ["2"]


async def test_a_task_run_before_the_timer_is_due_is_dropped_and_the_timer_left_to_its_row() -> None:
    ctx, s = await _sleeping()
    kinds = _kinds(ctx, s)
    ctx.now = T0 + 999 - CLOCK_AHEAD_MS  # not due by history's clock, even a worker's ahead
    await timer_ran_ahead(ctx, _request(s, started_time=T0 + 1000))
    assert _kinds(ctx, s) == kinds and "1" in s.timers and s.running
    ctx.now = T0 + 999  # due within the worker's allowed lead, but the task is not taken:
    await timer_ran_ahead(ctx, _request(s, started_time=T0 + 999))  # its time precedes the fire time
    assert _kinds(ctx, s) == kinds and "1" in s.timers  # history does not fire it early either


def _fired_at_once(ctx: GraceContext, s: MutableState, kinds: list[str], *, task_owed: bool = False) -> None:
    """The task run ahead was not taken, and the timer, due, fired without waiting out the
    grace: its firing is an input of a task handed out as usual."""
    assert _kinds(ctx, s) == [*kinds, "TimerFired", *([] if task_owed else ["WorkflowTaskScheduled"])]
    assert "1" not in s.timers and s.wt is not None and s.running
    assert f"{s.run_id}/user_timer/1" in ctx.transitions[-1].timers_delete


@pytest.mark.parametrize("started_time", [
    T0 + 999,  # the task's time precedes the fire time
    T0 + 1004 + CLOCK_AHEAD_MS,  # the task's time is too far ahead of history's clock
])
async def test_a_task_with_a_time_out_of_bounds_is_dropped_and_the_due_timer_fires_at_once(started_time: int) -> None:
    ctx, s = await _sleeping()
    kinds = _kinds(ctx, s)
    ctx.now = T0 + 1003
    await timer_ran_ahead(ctx, _request(s, started_time=started_time))
    _fired_at_once(ctx, s, kinds)


async def test_a_worker_clock_a_little_ahead_of_historys_still_has_its_task_recorded() -> None:
    # The worker woke at the fire time by its own clock, 12 ms ahead of history's: the
    # timer is not yet due by history's clock, and the task's time is in history's future.
    ctx, s = await _sleeping()
    ctx.now = T0 + 990
    await timer_ran_ahead(ctx, _request(s, started_time=T0 + 1002))
    assert _kinds(ctx, s)[-5:] == ["TimerFired", "WorkflowTaskScheduled", "WorkflowTaskStarted",
                                   "WorkflowTaskCompleted", "WorkflowExecutionCompleted"]


@pytest.mark.parametrize("change", [
    {"after_started_time": T0 + 6},  # not the task history recorded
    {"after_scheduled_event_id": 7},
    {"after_ahead_id": 9},
    {"ahead_id": 0},
])
async def test_a_task_that_does_not_follow_the_last_completed_one_is_dropped(change: dict[str, Any]) -> None:
    ctx, s = await _sleeping()
    kinds = _kinds(ctx, s)
    ctx.now = T0 + 1003
    request = _request(s, started_time=T0 + 1001)
    request["workflow_task"].update(change)
    await timer_ran_ahead(ctx, request)
    _fired_at_once(ctx, s, kinds)


async def test_a_run_past_the_continue_as_new_threshold_gets_its_timer_task_handed_out() -> None:
    # A task run ahead sees the suggestion of the task before it: a run looping on a timer
    # would never learn it (and run into the hard limit) if history went on taking them.
    ctx, s = await _sleeping()
    ctx.limits = HistoryLimits(warn_events=s.next_event_id - 1)
    kinds = _kinds(ctx, s)
    ctx.now = T0 + 1003
    await timer_ran_ahead(ctx, _request(s, started_time=T0 + 1001))
    _fired_at_once(ctx, s, kinds)


async def test_a_signal_before_the_run_ahead_drops_it_and_the_due_timer_fires_at_once() -> None:
    ctx, s = await _sleeping()
    await engine.signal_workflow(ctx, _signal_request())
    assert s.wt is not None  # the signal's task is owed
    ctx.now = T0 + 1003
    kinds = _kinds(ctx, s)
    await timer_ran_ahead(ctx, _request(s, started_time=T0 + 1001))
    _fired_at_once(ctx, s, kinds, task_owed=True)  # the signal's task brings the firing too


async def test_an_unknown_or_fired_timer_drops_the_request() -> None:
    ctx, s = await _sleeping()
    ctx.now = T0 + 1003
    kinds = _kinds(ctx, s)
    await timer_ran_ahead(ctx, _request(s, timer_id="other", started_time=T0 + 1001))
    assert _kinds(ctx, s) == kinds
    started = next(e["event_id"] for e in ctx.events(s.run_id) if e["event_type"] == "TimerStarted")
    await engine.fire_timer(ctx, engine.TimerFiring("k", T0 + 1300, "ns", "wf", s.run_id, "user_timer", started, 0))
    kinds = _kinds(ctx, s)
    assert kinds[-2:] == ["TimerFired", "WorkflowTaskScheduled"]
    await timer_ran_ahead(ctx, _request(s, started_time=T0 + 1001))
    assert _kinds(ctx, s) == kinds


async def test_a_timer_started_by_a_task_run_ahead_is_held_when_that_task_says_so() -> None:
    ctx, s = await _sleeping()
    ctx.now = T0 + 1003
    await timer_ran_ahead(ctx, _request(s, started_time=T0 + 1001, commands=[_timer("2")],
                                        runs_timers_ahead=True))
    assert s.timers["2"].fire_at == T0 + 1001 + 1000
    assert _user_rows(ctx)[-1] == T0 + 2001 + GRACE
    # The next timer runs ahead after that task, named by its ahead id.
    ctx.now = T0 + 2005
    await timer_ran_ahead(ctx, _ref(s, 2) | {"timer_id": "2", "workflow_task": _ahead(
        T0 + 2002, after_ahead_id=42, after_scheduled_event_id=0, after_started_time=T0 + 1001, ahead_id=43)})
    assert not s.running and _kinds(ctx, s)[-5] == "TimerFired"


def test_the_request_round_trips_through_avro_and_is_validated() -> None:
    ctx_request = {"namespace": "ns", "workflow_id": "wf", "run_id": "r", "scheduled_event_id": 2, "attempt": 1,
                   "identity": "w", "timer_id": "1", "workflow_task": {**_ahead(T0), "runs_timers_ahead": True}}
    name, read = avro.decode(avro.encode("RespondTimerRunAhead", ctx_request))
    assert name == "RespondTimerRunAhead" and read == ctx_request
    assert records.RespondTimerRunAhead.from_dict(read).workflow_task.runs_timers_ahead
    validation.check_command("RespondTimerRunAhead", read)
    with pytest.raises(validation.Invalid):
        validation.check_command("RespondTimerRunAhead", {**read, "timer_id": ""})


def _row_firing(s: MutableState, ctx: MemoryContext, at: int) -> engine.TimerFiring:
    started = next(e["event_id"] for e in ctx.events(s.run_id) if e["event_type"] == "TimerStarted")
    return engine.TimerFiring(f"{s.run_id}/user_timer/1", at, "ns", "wf", s.run_id, "user_timer", started, 0)


async def test_a_timer_whose_grace_is_over_waits_for_the_requests_the_shard_has_on_hand() -> None:
    # A burst: the worker's task for the timer may be among the requests still untaken.
    ctx, s = await _sleeping()
    kinds = _kinds(ctx, s)
    ctx.now, ctx.requests_on_hand = T0 + 1000 + GRACE, True
    firing = _row_firing(s, ctx, T0 + 1000 + GRACE)
    await engine.fire_timer(ctx, firing)
    # Re-checked for a few graces, and let go a few more past its row whatever it waits for.
    assert ctx.held == [(firing, T0 + 1000 + (1 + engine.RECHECK_GRACES) * GRACE,
                         T0 + 1000 + (1 + engine.GUARD_GRACES) * GRACE)]
    assert _kinds(ctx, s) == kinds and "1" in s.timers and not ctx.rows_deleted  # its row stays
    # The task came in the backlog: history takes it, and the row goes with it.
    ctx.now = T0 + 1000 + GRACE + 50
    await timer_ran_ahead(ctx, _request(s, started_time=T0 + 1001))
    assert _kinds(ctx, s)[len(kinds)] == "TimerFired" and not s.running


async def test_a_held_timer_fires_once_the_shard_took_what_it_had_on_hand() -> None:
    ctx, s = await _sleeping()
    kinds = _kinds(ctx, s)
    ctx.now, ctx.requests_on_hand = T0 + 1000 + GRACE, True
    firing = _row_firing(s, ctx, T0 + 1000 + GRACE)
    await engine.fire_timer(ctx, firing)
    ctx.requests_on_hand = False  # no task of the worker's among them: it went away
    await engine.fire_timer(ctx, firing)
    assert _kinds(ctx, s)[len(kinds):] == ["TimerFired", "WorkflowTaskScheduled"]
    assert ctx.rows_deleted == [firing.key]


async def test_only_a_timer_held_for_a_worker_that_runs_timers_ahead_waits_for_the_backlog() -> None:
    ctx, s = await _sleeping(runs_timers_ahead=False)  # its row is at the fire time itself
    kinds = _kinds(ctx, s)
    ctx.now, ctx.requests_on_hand = T0 + 1000, True
    await engine.fire_timer(ctx, _row_firing(s, ctx, T0 + 1000))
    assert not ctx.held and _kinds(ctx, s)[len(kinds):] == ["TimerFired", "WorkflowTaskScheduled"]
