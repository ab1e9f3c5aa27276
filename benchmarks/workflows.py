"""The benchmark workloads, written against the public SDK."""

from __future__ import annotations

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
    """Sleeps until the wall-clock second ``due`` (epoch seconds), as many runs started
    together with the same ``due`` do (timers all due at once); returns the wall clock read
    right before calling sleep and right after it returns, and the task's ``workflow.now()``
    the delay was counted from.

    The delay is counted from ``workflow.now()`` (the task's time), and the timer runs from
    the code's call (decision 0013), so it comes due at ``due`` plus the time from the task's
    start to the call: a late sample says how long a timer waited past its firing only when
    the first tasks have all run well before ``due`` (the benchmark leaves a lead for that,
    and reports how late the calls came).
    """

    @workflow.run
    async def run(self, due: float) -> list[float]:
        before_wall, now = time.time(), workflow.now().timestamp()
        await workflow.sleep(max(0.0, due - now))
        return [before_wall, time.time(), now]


WORKFLOWS = [OneActivity, OneTimer, SleepUntil]
ACTIVITIES = [identity]
