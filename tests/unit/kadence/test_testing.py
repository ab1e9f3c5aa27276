"""kadence.testing: activities in isolation, and workflows in memory with time skipping."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from kadence import activity, workflow
from kadence.common import RetryPolicy
from kadence.converter import DataConverter
from kadence.exceptions import (
    ActivityError,
    ActivityTimeoutError,
    ApplicationError,
    PayloadError,
    WorkflowFailureError,
    WorkflowTaskError,
)
from kadence.testing import ActivityEnvironment, WorkflowEnvironment, retry_backoff
from services.history.engine import retry_backoff as server_retry_backoff
from tests.helpers import stays
from tests.unit.kadence.test_converter import XorZlib
from tests.unit.kadence.test_typed_workflows import ORDER_ID, Checkout, Order, Receipt, charge
from tests.unit.services.history.test_state import activity_info

pytestmark = pytest.mark.timeout(30)


# -- ActivityEnvironment ---------------------------------------------------------------


@dataclass
class Job:
    name: str
    steps: int


@activity.defn
async def crunch(job: Job) -> str:
    for step in range(job.steps):
        activity.heartbeat(step)
        await asyncio.sleep(0)
    return f"{activity.info().activity_type}:{job.name}"


async def test_activity_environment_runs_with_info_heartbeats_and_conversion() -> None:
    env = ActivityEnvironment()
    assert await env.run(crunch, Job("a", 3)) == "crunch:a"
    assert env.heartbeats == [(0,), (1,), (2,)]
    with pytest.raises(PayloadError, match=r"argument 1 of activity crunch: cannot convert .* missing field 'steps'"):
        await env.run(crunch, {"name": "a"})


@activity.defn
async def wait_forever() -> None:
    while True:
        activity.heartbeat()
        await asyncio.sleep(0.01)


async def test_cancel_cancels_an_async_activity() -> None:
    env = ActivityEnvironment()
    env.on_heartbeat = lambda _: env.cancel() if len(env.heartbeats) == 3 else None
    with pytest.raises(asyncio.CancelledError):
        await env.run(wait_forever)
    assert len(env.heartbeats) == 3


@activity.defn
def sync_until_cancelled() -> str:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        activity.heartbeat()
        if activity.is_cancel_requested():
            return f"stopped in {threading.current_thread().name.split('_')[0]}"
        time.sleep(0.01)
    return "never cancelled"


async def test_cancel_is_seen_by_a_sync_activity() -> None:
    env = ActivityEnvironment()
    env.on_heartbeat = lambda _: env.cancel() if len(env.heartbeats) == 2 else None
    assert await env.run(sync_until_cancelled) == "stopped in kadence-test-activity"


# -- WorkflowEnvironment -----------------------------------------------------------------


@activity.defn
async def send(text: str) -> str:
    return f"sent {text}"


@workflow.defn
class Reminder:
    def __init__(self) -> None:
        self.snoozed = 0

    @workflow.run
    async def run(self, text: str) -> str:
        await workflow.sleep(timedelta(days=30))
        while True:
            try:
                await workflow.wait_condition(lambda: self.snoozed > 0, timeout=timedelta(days=1))
            except TimeoutError:
                break
            self.snoozed -= 1
        return await workflow.execute_activity(send, text, start_to_close_timeout=timedelta(seconds=5))

    @workflow.signal
    def snooze(self) -> None:
        self.snoozed += 1

    @workflow.query
    def pending(self) -> int:
        return self.snoozed


async def test_a_workflow_that_sleeps_30_days_finishes_at_once() -> None:
    started = time.monotonic()
    async with WorkflowEnvironment(workflows=[Reminder], activities=[send]) as env:
        before = env.now()
        assert await env.execute_workflow(Reminder.run, "hi", id="r-1") == "sent hi"
        assert env.now() - before >= timedelta(days=31)
    assert time.monotonic() - started < 5


async def test_time_only_skips_while_the_test_waits() -> None:
    async with WorkflowEnvironment(workflows=[Reminder], activities=[send]) as env:
        handle = await env.start_workflow(Reminder.run, "hi", id="r-2")
        await stays(lambda: env.now() - datetime(2026, 1, 1, tzinfo=UTC) < timedelta(minutes=1),
                    for_seconds=0.05, what="no skip while nobody waits")
        await env.sleep(timedelta(days=30, hours=1))  # the sleep is over, the 1-day wait started
        await handle.signal(Reminder.snooze)
        assert await handle.query(Reminder.pending) in (0, 1)
        assert await handle.result() == "sent hi"
        events = [e["event_type"] for e in await handle.history()]
        assert events.count("TimerFired") == 2 and events[-1] == "WorkflowExecutionCompleted"


attempts: list[int] = []


@activity.defn
async def flaky() -> int:
    attempts.append(activity.info().attempt)
    if activity.info().attempt < 3:
        raise RuntimeError("not yet")
    return activity.info().attempt


@activity.defn
async def broken() -> None:
    raise ApplicationError("no", type="Broken", non_retryable=True)


@workflow.defn
class Retrying:
    @workflow.run
    async def run(self) -> int:
        value: int = await workflow.execute_activity(
            flaky, start_to_close_timeout=timedelta(seconds=5),
            retry_policy=RetryPolicy(initial_interval=timedelta(hours=1)))
        try:
            await workflow.execute_activity(broken, start_to_close_timeout=timedelta(seconds=5))
        except ActivityError as err:
            assert isinstance(err.cause, ApplicationError) and err.cause.type == "Broken"
        return value


async def test_activity_retries_follow_the_policy_with_backoff_skipped() -> None:
    attempts.clear()
    async with WorkflowEnvironment(workflows=[Retrying], activities=[flaky, broken]) as env:
        before = env.now()
        assert await env.execute_workflow(Retrying.run, id="retry") == 3
        assert env.now() - before >= timedelta(hours=3)  # 1 h + 2 h of backoff, skipped
    assert attempts == [1, 2, 3]


@workflow.defn
class Failing:
    @workflow.run
    async def run(self, mode: str) -> None:
        if mode == "fail":
            raise ApplicationError("bad order", type="Bad")
        raise KeyError("a bug")


async def test_failures_and_task_errors_reach_the_test() -> None:
    async with WorkflowEnvironment(workflows=[Failing]) as env:
        with pytest.raises(WorkflowFailureError, match="bad order"):
            await env.execute_workflow(Failing.run, "fail", id="f-1")
        with pytest.raises(WorkflowTaskError, match="a bug"):
            await env.execute_workflow(Failing.run, "bug", id="f-2")


@workflow.defn
class Looping:
    @workflow.run
    async def run(self, n: int) -> int:
        await workflow.sleep(timedelta(days=1))
        if n < 3:
            workflow.continue_as_new(n + 1)
        return n


async def test_continue_as_new_is_followed_and_execution_timeout_applies() -> None:
    async with WorkflowEnvironment(workflows=[Looping]) as env:
        assert await env.execute_workflow(Looping.run, 0, id="loop") == 3
        with pytest.raises(WorkflowFailureError, match="timed out"):
            await env.execute_workflow(Looping.run, 0, id="loop-2", execution_timeout=timedelta(hours=1))


@pytest.mark.parametrize(("policy", "attempt", "now", "s2c", "error", "non_retryable"), [
    (None, 1, 0, 0, "E", False), (None, 7, 0, 0, "E", False), (None, 1, 0, 0, "E", True),
    ({"initial_interval_ms": 100, "backoff_coefficient": 3.0, "maximum_interval_ms": 500, "maximum_attempts": 4,
      "non_retryable_error_types": ["X"]}, 3, 0, 0, "E", False),
    ({"initial_interval_ms": 100, "backoff_coefficient": 3.0, "maximum_interval_ms": 500, "maximum_attempts": 4,
      "non_retryable_error_types": ["X"]}, 4, 0, 0, "E", False),
    ({"initial_interval_ms": 100, "backoff_coefficient": 3.0, "maximum_interval_ms": 500, "maximum_attempts": 4,
      "non_retryable_error_types": ["X"]}, 1, 0, 0, "X", False),
    (None, 2, 5_000, 6_000, "E", False), (None, 1, 5_000, 6_000, "E", False),
])
def test_the_retry_rule_is_the_servers(policy: dict[str, object] | None, attempt: int, now: int, s2c: int,
                                       error: str, non_retryable: bool) -> None:
    act = activity_info(retry_policy=policy, attempt=attempt, schedule_to_close_timeout_ms=s2c)
    assert retry_backoff(policy, attempt, now, 0, s2c, error, non_retryable) == \
        server_retry_backoff(act, now, error, non_retryable)


async def test_typed_payloads_and_a_codec_in_the_environment() -> None:
    converter = DataConverter(payload_codec=XorZlib())
    async with WorkflowEnvironment(workflows=[Checkout], activities=[charge], data_converter=converter) as env:
        order = Order(UUID(ORDER_ID), Decimal("3.50"))
        handle = await env.start_workflow(Checkout.run, order, id="typed")
        await handle.signal(Checkout.discount, Decimal("0.50"))
        assert await handle.result() == Receipt(order.id, Decimal("3.00"))
        assert await handle.query(Checkout.owed, "EUR") == {"EUR": Decimal("0.50")}
        assert "3.50" not in str(await handle.history())  # stored encoded, as a server would hold it


class Money:
    """A type the default converter does not know."""

    def __init__(self, cents: int) -> None:
        self.cents = cents

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Money) and other.cents == self.cents

    def __hash__(self) -> int:
        return self.cents


class MoneyConverter(DataConverter):
    def to_json(self, value: Any) -> Any:
        if isinstance(value, Money):
            return f"{value.cents / 100:.2f}"
        return super().to_json(value)

    def from_json(self, data: Any, hint: Any) -> Any:
        if hint is Money:
            return Money(round(float(data) * 100))
        return super().from_json(data, hint)


@activity.defn
async def double(amount: Money) -> Money:
    assert isinstance(amount, Money)
    return Money(amount.cents * 2)


@workflow.defn
class Doubler:
    @workflow.run
    async def run(self, amount: Money) -> Money:
        return await workflow.execute_activity(double, amount, start_to_close_timeout=timedelta(seconds=5))


async def test_a_custom_converter_reaches_workflow_and_activity_code() -> None:
    async with WorkflowEnvironment(workflows=[Doubler], activities=[double], data_converter=MoneyConverter()) as env:
        assert await env.execute_workflow(Doubler.run, Money(150), id="money") == Money(300)
    async with WorkflowEnvironment(workflows=[Doubler], activities=[double]) as env:
        with pytest.raises(PayloadError, match=r"argument 1 of workflow Doubler: Money .* is not JSON"):
            await env.start_workflow(Doubler.run, Money(1), id="money")


async def test_retried_attempts_leave_no_events_and_the_last_names_the_failure_before_it() -> None:
    attempts.clear()
    async with WorkflowEnvironment(workflows=[Retrying], activities=[flaky, broken]) as env:
        handle = await env.start_workflow(Retrying.run, id="retry-events")
        assert await handle.result() == 3
        events = await handle.history()
    flaky_events = [e for e in events if e["event_type"] in ("ActivityTaskStarted", "ActivityTaskCompleted",
                                                             "ActivityTaskFailed", "ActivityTaskTimedOut")
                    and e["attributes"]["scheduled_event_id"] == 5]
    assert [e["event_type"] for e in flaky_events] == ["ActivityTaskStarted", "ActivityTaskCompleted"]
    assert flaky_events[0]["attributes"]["attempt"] == 3
    assert flaky_events[0]["attributes"]["last_failure"]["message"] == "not yet"


@activity.defn
async def too_slow() -> None:
    await asyncio.sleep(30)


@workflow.defn
class TimesOut:
    @workflow.run
    async def run(self) -> str:
        try:
            await workflow.execute_activity(too_slow, start_to_close_timeout=timedelta(milliseconds=100),
                                            retry_policy=RetryPolicy(maximum_attempts=2))
        except ActivityError as err:
            assert isinstance(err.cause, ActivityTimeoutError)
            return f"{type(err.cause).__name__} {err.cause.timeout_type}"
        return "completed"


async def test_the_start_to_close_timeout_applies_to_each_attempt() -> None:
    async with WorkflowEnvironment(workflows=[TimesOut], activities=[too_slow]) as env:
        handle = await env.start_workflow(TimesOut.run, id="slow")
        assert await handle.result() == "ActivityTimeoutError StartToClose"
        started = [e for e in await handle.history() if e["event_type"] == "ActivityTaskStarted"]
        assert [e["attributes"]["attempt"] for e in started] == [2]


@workflow.defn
class FlakyKit:
    @workflow.run
    async def run(self, succeed_on: int) -> str:
        attempt = workflow.info().attempt
        if attempt < succeed_on:
            raise ApplicationError(f"attempt {attempt} failed", type="Flaky")
        return f"ok on attempt {attempt}"


async def test_a_workflow_retry_policy_in_the_environment() -> None:
    from kadence.common import RetryPolicy

    policy = RetryPolicy(initial_interval=timedelta(hours=1), maximum_attempts=3)
    async with WorkflowEnvironment(workflows=[FlakyKit]) as env:
        # Two backoffs of an hour each: time skips them.
        assert await env.execute_workflow(FlakyKit.run, 3, id="flaky", retry_policy=policy) == "ok on attempt 3"
        assert (await env.get_workflow_handle("flaky").describe())["attempt"] == 3
        with pytest.raises(WorkflowFailureError, match="attempt 3 failed"):
            await env.execute_workflow(FlakyKit.run, 9, id="flaky-2", retry_policy=policy)
        with pytest.raises(WorkflowFailureError, match="attempt 1 failed"):
            await env.execute_workflow(FlakyKit.run, 2, id="flaky-3")  # no policy: no retry
