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


WORKFLOWS = [OneActivity, OneTimer]
ACTIVITIES = [identity]
