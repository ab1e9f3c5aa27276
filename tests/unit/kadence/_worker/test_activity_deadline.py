"""An activity attempt's local start-to-close deadline behaves as asyncio.timeout did: only
its own cancellation counts as the attempt timing out (nothing reported: the server times
it out); an activity's own TimeoutError is its failure; a cancellation from outside goes
on as a cancellation; and an attempt done in time leaves no cancellation behind."""

from __future__ import annotations

import asyncio

import pytest

from kadence import activity
from kadence._activity import ActivityDefinition
from kadence._worker.activity_tasks import ActivityTaskProcessor
from tests.unit.kadence._worker.test_worker import FakeTransport, _activity_task

pytestmark = pytest.mark.timeout(30)


@activity.defn
async def own_timeout() -> None:
    raise TimeoutError("the activity's own wait ran out")


@activity.defn
async def quick() -> str:
    await asyncio.sleep(0)
    return "done"


@activity.defn
async def waits() -> None:
    await asyncio.sleep(10)


def _processor(transport: FakeTransport) -> ActivityTaskProcessor:
    return ActivityTaskProcessor(transport, namespace="default", task_queue="tq",
                                 activities=[ActivityDefinition.of(f) for f in (own_timeout, quick, waits)],
                                 identity="test", executor=None)  # type: ignore[arg-type]


async def test_an_activitys_own_timeout_error_is_its_failure() -> None:
    transport = FakeTransport()
    await _processor(transport).process(_activity_task("own_timeout", start_to_close_timeout_ms=5000))
    [failed] = transport.posted("/activity-tasks/fail")
    assert failed["failure"]["type"] == "TimeoutError"
    assert transport.posted("/activity-tasks/complete") == []


async def test_an_attempt_done_in_time_is_completed_and_leaves_no_cancellation() -> None:
    transport = FakeTransport()
    processor = _processor(transport)

    async def attempt() -> int:
        await processor.process(_activity_task("quick", start_to_close_timeout_ms=50))
        await asyncio.sleep(0.1)  # past the deadline: its timer is gone
        current = asyncio.current_task()
        assert current is not None
        return current.cancelling()

    assert await asyncio.create_task(attempt()) == 0
    [completed] = transport.posted("/activity-tasks/complete")
    assert completed["result"] == '"done"'


async def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    transport = FakeTransport()
    running = asyncio.create_task(_processor(transport).process(_activity_task("waits", start_to_close_timeout_ms=5000)))
    await asyncio.sleep(0.05)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert transport.posted("/activity-tasks/fail") == []
    assert transport.posted("/activity-tasks/complete") == []


async def test_the_deadline_expiring_reports_nothing_and_ends_the_attempt() -> None:
    transport = FakeTransport()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.create_task(_processor(transport).process(_activity_task("waits", start_to_close_timeout_ms=50)))
    assert loop.time() - started < 5
    assert transport.calls == []
