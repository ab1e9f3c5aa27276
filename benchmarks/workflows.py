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
    right before calling sleep and right after it returns.

    The delay is counted from ``workflow.now()`` (the task's time), so the timer, which runs
    from when history records it, comes due at ``due`` plus the task's answer time: a late
    sample says how long a timer waited past its firing only when the starts have all been
    answered well before ``due`` (the benchmark leaves a lead for that).
    """

    @workflow.run
    async def run(self, due: float) -> list[float]:
        before_wall = time.time()
        await workflow.sleep(max(0.0, due - workflow.now().timestamp()))
        return [before_wall, time.time()]


WORKFLOWS = [OneActivity, OneTimer, SleepUntil]
ACTIVITIES = [identity]
