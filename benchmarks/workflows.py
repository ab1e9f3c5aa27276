"""The benchmark workloads, written against the public SDK."""

from __future__ import annotations

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
    """Sleeps on a durable timer; returns how late it woke, in ms, as seen inside the workflow."""

    @workflow.run
    async def run(self, seconds: float) -> float:
        before = workflow.now()
        await workflow.sleep(seconds)
        return (workflow.now() - before).total_seconds() * 1000 - seconds * 1000


WORKFLOWS = [OneActivity, OneTimer]
ACTIVITIES = [identity]
