"""Local activities (kadence/_workflow/local_activities.py): run by the worker inside the
workflow task, recorded as markers, retried per the policy, replayed without running."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from kadence import activity, workflow
from kadence.common import RetryPolicy
from kadence.exceptions import ActivityError, ActivityTimeoutError, NonDeterminismError
from kadence.replay import Replayer, decode_history
from kadence.testing import WorkflowEnvironment

pytestmark = pytest.mark.timeout(30)

CALLS: dict[str, int] = {}
FAST = RetryPolicy(initial_interval=timedelta(milliseconds=10), maximum_attempts=5)


@dataclass
class Quote:
    sku: str
    cents: int


@activity.defn
async def flaky_price(sku: str) -> Quote:
    CALLS[sku] = CALLS.get(sku, 0) + 1
    if CALLS[sku] < 3:
        raise RuntimeError(f"price service down (attempt {activity.info().attempt})")
    return Quote(sku, 100 * CALLS[sku])


@activity.defn
async def slow() -> str:
    CALLS["slow"] = CALLS.get("slow", 0) + 1
    await asyncio.sleep(5)
    return "never"


@activity.defn
def sync_double(n: int) -> int:
    CALLS["double"] = CALLS.get("double", 0) + 1
    return 2 * n


@workflow.defn(name="Pricing")
class Pricing:
    @workflow.run
    async def run(self, sku: str) -> str:
        quote = await workflow.execute_local_activity(flaky_price, sku, start_to_close_timeout=timedelta(seconds=2),
                                                      retry_policy=FAST)
        assert isinstance(quote, Quote)
        doubled = await workflow.execute_local_activity(sync_double, quote.cents,
                                                        start_to_close_timeout=timedelta(seconds=2))
        return f"{quote.sku}:{doubled}"


@workflow.defn(name="Pricing")
class PricingChanged:
    """The same type, with another local activity first: replay must refuse it."""

    @workflow.run
    async def run(self, sku: str) -> str:
        await workflow.execute_local_activity(sync_double, 1, start_to_close_timeout=timedelta(seconds=2))
        return "changed"


@workflow.defn(name="Pricing")
class PricingWithoutLocal:
    @workflow.run
    async def run(self, sku: str) -> str:
        return "no local activity"


@workflow.defn
class TimesOut:
    @workflow.run
    async def run(self) -> str:
        try:
            await workflow.execute_local_activity(slow, start_to_close_timeout=timedelta(milliseconds=50),
                                                  retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=10),
                                                                           maximum_attempts=2))
        except ActivityError as err:
            assert isinstance(err.cause, ActivityTimeoutError)
            return f"{err.cause.timeout_type}:{err.retry_state}"
        return "completed?"


@workflow.defn
class LongBackoff:
    @workflow.run
    async def run(self, sku: str) -> int:
        quote = await workflow.execute_local_activity(
            flaky_price, sku, start_to_close_timeout=timedelta(seconds=2),
            retry_policy=RetryPolicy(initial_interval=timedelta(minutes=10), backoff_coefficient=1.0))
        cents: int = quote.cents
        return cents


def markers(events: list[dict[str, Any]]) -> list[str]:
    return [e["attributes"]["marker_name"] for e in events if e["event_type"] == "MarkerRecorded"]


async def test_a_local_activity_that_fails_twice_then_succeeds_is_one_marker_and_replays_without_running() -> None:
    CALLS.clear()
    async with WorkflowEnvironment(workflows=[Pricing]) as env:
        handle = await env.start_workflow(Pricing.run, "tea", id="p-1")
        assert await handle.result() == "tea:600"
        events = await handle.history()
    assert CALLS == {"tea": 3, "double": 1}
    types = [e["event_type"] for e in events]
    assert "ActivityTaskScheduled" not in types
    # One workflow task: both local activities ran in it, each recorded once.
    assert types.count("WorkflowTaskCompleted") == 1
    assert markers(events) == ["local_activity:1", "local_activity:2"]

    Replayer(workflows=[Pricing]).replay(events)
    assert CALLS == {"tea": 3, "double": 1}  # the markers gave the outcomes
    with pytest.raises(NonDeterminismError, match="history recorded local activity flaky_price there"):
        Replayer(workflows=[PricingChanged]).replay(events)
    with pytest.raises(NonDeterminismError, match="MarkerRecorded"):
        Replayer(workflows=[PricingWithoutLocal]).replay(events)


async def test_code_asking_for_a_local_activity_history_does_not_record_is_non_deterministic() -> None:
    async with WorkflowEnvironment(workflows=[PricingWithoutLocal]) as env:
        handle = await env.start_workflow(PricingWithoutLocal.run, "tea", id="p-2")
        assert await handle.result() == "no local activity"
        events = await handle.history()
    with pytest.raises(NonDeterminismError, match="history records no outcome for it"):
        Replayer(workflows=[PricingChanged]).replay(events)


@workflow.defn
class GivesUpWaiting:
    @workflow.run
    async def run(self) -> str:
        try:
            await asyncio.wait_for(workflow.execute_local_activity(
                flaky_price, "pie", start_to_close_timeout=timedelta(seconds=2),
                retry_policy=RetryPolicy(initial_interval=timedelta(hours=1))), timeout=60)
        except TimeoutError:
            return "gave up"
        return "done"


async def test_cancelling_the_wait_cancels_the_backoff_timer_and_no_attempt_follows() -> None:
    CALLS.clear()
    async with WorkflowEnvironment(workflows=[GivesUpWaiting]) as env:
        handle = await env.start_workflow(GivesUpWaiting.run, id="g-1")
        assert await handle.result() == "gave up"
        events = await handle.history()
    assert CALLS == {"pie": 1}
    timers = [e["attributes"]["timer_id"] for e in events if e["event_type"] == "TimerCanceled"]
    assert timers == ["local_activity:1:1"]
    Replayer(workflows=[GivesUpWaiting]).replay(events)


async def test_a_local_activity_that_times_out_fails_with_a_timeout_after_its_attempts() -> None:
    CALLS.clear()
    async with WorkflowEnvironment(workflows=[TimesOut]) as env:
        assert await env.execute_workflow(TimesOut.run, id="t-1") == "StartToClose:MaximumAttemptsReached"
    assert CALLS == {"slow": 2}


async def test_a_backoff_longer_than_the_task_budget_waits_on_a_durable_timer() -> None:
    CALLS.clear()
    async with WorkflowEnvironment(workflows=[LongBackoff]) as env:
        handle = await env.start_workflow(LongBackoff.run, "cake", id="b-1")
        assert await handle.result() == 300
        events = await handle.history()
    types = [e["event_type"] for e in events]
    # Attempt 1 fails in the first task; the 10-minute backoff is a timer (skipped here);
    # attempts 2 (fails, 10 more minutes) and 3 follow in the tasks the timers bring.
    assert types.count("TimerStarted") == 2 and types.count("TimerFired") == 2
    assert markers(events) == ["local_activity:1"] * 3
    assert CALLS == {"cake": 3}
    Replayer(workflows=[LongBackoff]).replay(events)
    assert CALLS == {"cake": 3}


async def test_an_attempt_is_not_started_once_the_task_budget_is_spent() -> None:
    import time

    from kadence._workflow.local_activities import LocalActivityExecutor, LocalActivityRequest
    from kadence.converter import default_converter

    CALLS.clear()
    request = LocalActivityRequest(seq=4, activity_id="a", activity_type="flaky_price", fn=flaky_price,
                                   input='["jam"]', attempt=2, scheduled_time_ms=int(time.time() * 1000),
                                   start_to_close_ms=1000, schedule_to_close_ms=0, retry_policy=None)
    executor = LocalActivityExecutor({}, default_converter())
    outcome = await executor.run(request, deadline=time.monotonic())
    # Nothing ran: the next task runs attempt 2 after the shortest timer.
    assert (outcome.attempt, outcome.failure, outcome.backoff_ms) == (1, None, 1)
    assert CALLS == {}


async def test_the_marker_goes_through_the_payload_codec() -> None:
    from kadence.converter import DataConverter
    from tests.unit.kadence.test_converter import XorZlib

    CALLS.clear()
    converter = DataConverter(payload_codec=XorZlib())
    async with WorkflowEnvironment(workflows=[Pricing], data_converter=converter) as env:
        handle = await env.start_workflow(Pricing.run, "secret-sku", id="p-3")
        assert await handle.result() == "secret-sku:600"
        events = await handle.history()
    details = [str(e["attributes"]["details"]) for e in events if e["event_type"] == "MarkerRecorded"]
    assert len(details) == 2 and not any("secret-sku" in d or "flaky_price" in d for d in details)
    Replayer(workflows=[Pricing], data_converter=converter).replay(await decode_history(events, converter))
    assert CALLS == {"secret-sku": 3, "double": 1}


async def test_a_backoff_timer_counts_from_the_failed_attempt_as_a_sleep_counts_from_its_call() -> None:
    import math
    import time

    from kadence._workflow.instance import Command
    from kadence._workflow.local_activities import LocalActivities, LocalActivityOutcome, LocalActivityRequest, _Pending

    class Recorder:  # stands in for the workflow instance: records the commands added
        def __init__(self) -> None:
            self.commands: list[Command] = []

        def _add(self, command: Command) -> None:
            self.commands.append(command)

    instance = Recorder()
    local = LocalActivities(instance)  # type: ignore[arg-type]
    request = LocalActivityRequest(seq=1, activity_id="a", activity_type="flaky_price", fn=flaky_price,
                                   input='["jam"]', attempt=1, scheduled_time_ms=0, start_to_close_ms=1000,
                                   schedule_to_close_ms=0, retry_policy=None)
    local._pending[1] = _Pending(request, asyncio.get_running_loop().create_future(), None)
    before = time.time() * 1000
    local.resolve(LocalActivityOutcome(1, "flaky_price", 1, failure={"message": "down"}, backoff_ms=600_000))
    after = math.ceil(time.time() * 1000)
    marker, timer = instance.commands
    assert marker.command_type == "RecordMarker"
    assert timer.command_type == "StartTimer"
    assert timer.attributes["start_to_fire_timeout_ms"] == 600_000
    assert before <= timer.attributes["requested_time"] <= after
