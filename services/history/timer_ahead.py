"""Timer run-ahead: a workflow task run on a user timer's firing by the worker that holds
the run, at the timer's fire time by its own clock, before history fired the timer.

A worker that runs timers ahead says so on the completion whose commands start a timer
(``runs_timers_ahead``); history then holds that timer's own firing for
``KADENCE_TIMER_AHEAD_GRACE_MS`` past its fire time (commands.py), so that the worker's
task, which comes at about the fire time, finds the timer still pending. History records
the task (RespondTimerRunAhead) only if the timer is pending and due by history's clock
(give or take ``CLOCK_AHEAD_MS`` of the worker's clock running ahead of it)
and the task is the one it would have handed out on that firing alone (the rule of
activity run-ahead, engine.may_run_ahead); then, in one transition: TimerFired, the task
scheduled, started (ran_ahead_id) and completed, its commands' events, and the timer's
row deleted. Otherwise it drops the task, and a timer due by history's clock fires at
once (the task that brings it is handed out); one not yet due fires from its row.
See docs/decisions/0014-timer-run-ahead.md.
"""

from __future__ import annotations

from kadence_protocol.enums import EventType, TimerKind
from kadence_protocol.records import RespondTimerRunAhead

from .engine import Context, may_run_ahead, run_ahead, settle

# How far the worker's clock may run ahead of history's. The worker wakes the run at the
# fire time by its own clock, the one the code's sleep is measured on (decision 0013); one
# a few milliseconds ahead would otherwise have every task dropped and every timer wait
# out the grace.
CLOCK_AHEAD_MS = 1_000


async def timer_ran_ahead(ctx: Context, req: RespondTimerRunAhead) -> None:
    t = await ctx.run(req.namespace, req.workflow_id, req.run_id)
    if t is None or not t.state.running:
        return
    timer = t.state.timers.get(req.timer_id)
    if timer is None or timer.fire_at > ctx.now + CLOCK_AHEAD_MS:
        return
    # The task's workflow.now() must not precede the fire time either: a task handed out on
    # the firing starts after it, and the code reads its time.
    took = may_run_ahead(ctx, t, timer.fire_at, req.workflow_task, clock_ahead_ms=CLOCK_AHEAD_MS)
    if not took and timer.fire_at > ctx.now:
        return  # not due by history's clock: its row fires it
    t.add(EventType.TIMER_FIRED, timer_id=timer.timer_id, started_event_id=timer.started_event_id)
    t.delete_timer(TimerKind.USER_TIMER, timer.timer_id)
    if took:
        run_ahead(ctx, t, req.workflow_task, req.identity)
    # Not taken (a signal came first, the run is past the continue-as-new threshold...): the
    # timer is due and its worker is alive, so it fires now, not after the grace, and the task
    # that brings it is handed out as usual.
    settle(t)
