"""Workflows and activities the end-to-end tests run, written against the public SDK only."""

from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta

from kadence import RetryPolicy, activity, workflow

FAST_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=100), backoff_coefficient=1.0)
_calls: dict[str, itertools.count[int]] = {}


@activity.defn
async def echo(value: str) -> str:
    return value


@activity.defn
def shout(value: str) -> str:  # a sync activity: runs in a thread
    return value.upper() + "!"


@activity.defn
async def flaky(key: str) -> str:
    """Fails the first two attempts of each key, then succeeds."""
    n = next(_calls.setdefault(key, itertools.count(1)))
    if n < 3:
        raise RuntimeError(f"attempt {n} of {key} fails")
    return f"{key} after {activity.info().attempt} attempts"


@activity.defn
async def sleepy(key: str) -> str:
    """The first attempt hangs past its start-to-close timeout; later ones answer at once."""
    if activity.info().attempt == 1:
        await asyncio.sleep(30)
    return f"{key} on attempt {activity.info().attempt}"


@workflow.defn
class EchoWorkflow:
    @workflow.run
    async def run(self, value: str) -> str:
        return await workflow.execute_activity(echo, value, start_to_close_timeout=timedelta(seconds=10))


@workflow.defn
class ShoutWorkflow:
    @workflow.run
    async def run(self, value: str) -> str:
        return await workflow.execute_activity(shout, value, start_to_close_timeout=timedelta(seconds=10))


@workflow.defn
class TwoStepWorkflow:
    @workflow.run
    async def run(self, value: str) -> str:
        first = await workflow.execute_activity(shout, value, start_to_close_timeout=timedelta(seconds=10))
        return await workflow.execute_activity(echo, first + "?", start_to_close_timeout=timedelta(seconds=10))


@workflow.defn
class FlakyWorkflow:
    @workflow.run
    async def run(self, key: str) -> str:
        return await workflow.execute_activity(flaky, key, start_to_close_timeout=timedelta(seconds=10),
                                               retry_policy=FAST_RETRY)


@workflow.defn
class TimeoutWorkflow:
    @workflow.run
    async def run(self, key: str) -> str:
        return await workflow.execute_activity(sleepy, key, start_to_close_timeout=timedelta(seconds=1),
                                               retry_policy=FAST_RETRY)


@workflow.defn
class TimerWorkflow:
    @workflow.run
    async def run(self, seconds: float) -> float:
        started = workflow.now()
        await workflow.sleep(seconds)
        return (workflow.now() - started).total_seconds()


@workflow.defn
class ApprovalWorkflow:
    def __init__(self) -> None:
        self.approved_by: str | None = None
        self.stage = "waiting"

    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: self.approved_by is not None)
        self.stage = "approved"
        return f"approved by {self.approved_by}"

    @workflow.signal
    def approve(self, who: str) -> None:
        self.approved_by = who

    @workflow.query
    def status(self) -> str:
        return self.stage




@activity.defn
async def beating(key: str) -> str:
    """Heartbeats its progress; the first attempt stops heartbeating and hangs."""
    info = activity.info()
    done = int(info.heartbeat_details[0]) if info.heartbeat_details else 0
    if info.attempt == 1:
        activity.heartbeat(done + 5)
        await asyncio.sleep(30)
    return f"{key} resumed at {done} on attempt {info.attempt}"


@workflow.defn
class HeartbeatWorkflow:
    @workflow.run
    async def run(self, key: str) -> str:
        return await workflow.execute_activity(beating, key, start_to_close_timeout=timedelta(seconds=30),
                                               heartbeat_timeout=timedelta(seconds=1), retry_policy=FAST_RETRY)


@workflow.defn
class CountdownWorkflow:
    """Continues as new until the count reaches zero."""

    @workflow.run
    async def run(self, count: int) -> str:
        if count > 0:
            workflow.continue_as_new(count - 1)
        return "liftoff"


@workflow.defn
class ForeverWorkflow:
    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)


ALL_WORKFLOWS = [EchoWorkflow, ShoutWorkflow, TwoStepWorkflow, FlakyWorkflow, TimeoutWorkflow, TimerWorkflow, ApprovalWorkflow,
                 HeartbeatWorkflow, CountdownWorkflow, ForeverWorkflow]
ALL_ACTIVITIES = [echo, shout, flaky, sleepy, beating]
