"""The benchmark workloads, written against the public SDK."""

from __future__ import annotations

import math
import time
from datetime import timedelta
from typing import Any

from kadence import activity, workflow


@activity.defn
async def identity(value: Any) -> Any:
    return value


@workflow.defn
class OneActivity:
    """Calls ONE activity that returns its input."""

    @workflow.run
    async def run(self, value: Any) -> Any:
        return await workflow.execute_activity(identity, value, start_to_close_timeout=timedelta(seconds=30))


@workflow.defn
class OneTimer:
    """Sleeps on a durable timer; returns the wall clock (``time.time()``) read right before
    calling sleep and right after it returns, and the lateness in ms by ``workflow.now()``.

    The wall-clock reads are for measurement only (they do not steer the commands). A worker
    that keeps the run cached runs each task once; after a replay ``before`` would be read
    after the wake-up, which the benchmark sees (a sample below half the sleep) and leaves out.
    """

    @workflow.run
    async def run(self, seconds: float) -> list[float]:
        before_wall, before = time.time(), workflow.now()
        await workflow.sleep(seconds)
        now_late_ms = (workflow.now() - before).total_seconds() * 1000 - seconds * 1000
        return [before_wall, time.time(), now_late_ms]


@workflow.defn
class SleepUntil:
    """Sleeps until the wall-clock moment ``due`` (epoch seconds), as many runs started
    together with the same ``due`` do (timers all due at once); returns the wall clock read
    right before calling sleep and right after it returns, the task's ``workflow.now()``, and
    whether that first read came in a replay (1.0) or not (0.0).

    A timer runs from the code's call (decision 0013), so the delay is counted from the wall
    clock at the call, rounded up to the millisecond: every run's timer comes due at ``due``
    itself, however long its first task waited in the worker, and the lateness past ``due``
    is the timer's own. (Counted from ``workflow.now()``, as before, a timer came due at
    ``due`` plus its task's wait before the call, up to hundreds of milliseconds under the
    burst of starts, and that wait was counted as the timer's lateness.) The delay is not
    part of the code's determinism: a replay matches a timer by its id, and the code starts
    one in every run.
    """

    @workflow.run
    async def run(self, due: float) -> list[float]:
        now, replaying, before_wall = workflow.now().timestamp(), workflow.is_replaying(), time.time()
        # At least a millisecond: a replay reads the clock after the moment, and must still
        # start the timer the history holds (sleep(0) starts none).
        await workflow.sleep(max(0.001, math.ceil((due - before_wall) * 1000) / 1000))
        return [before_wall, time.time(), now, 1.0 if replaying else 0.0]


WORKFLOWS = [OneActivity, OneTimer, SleepUntil]
ACTIVITIES = [identity]
