"""An activity that calls activity.raise_complete_async() is neither completed nor failed by
the worker (a client completes it later by its token), async or sync, and its attempt's
processing ends at once (the slot is free); a local activity cannot complete async."""

from __future__ import annotations

import concurrent.futures

import pytest

from kadence import activity
from kadence._activity import ActivityContext, ActivityDefinition, reset_context, set_context
from kadence._worker.activity_tasks import ActivityTaskProcessor
from tests.unit.kadence._worker.test_worker import FakeTransport, _activity_task

pytestmark = pytest.mark.timeout(30)

SEEN: list[str] = []


@activity.defn
async def async_later() -> str:
    SEEN.append(activity.info().task_token)
    activity.raise_complete_async()


@activity.defn
def sync_later() -> str:
    SEEN.append(activity.info().task_token)
    activity.raise_complete_async()


@activity.defn
async def swallows() -> str:
    try:
        activity.raise_complete_async()
    except Exception:  # noqa: BLE001 - what the test shows is not caught here
        return "caught"


@pytest.mark.parametrize("name", ["async_later", "sync_later", "swallows"])
async def test_an_activity_completing_async_gets_no_answer_from_the_worker(name: str) -> None:
    transport = FakeTransport()
    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        processor = ActivityTaskProcessor(
            transport, namespace="default", task_queue="tq", identity="test", executor=executor,
            activities=[ActivityDefinition.of(f) for f in (async_later, sync_later, swallows)])
        await processor.process(_activity_task(name, heartbeat_timeout_ms=100))
    assert [path for _, path, _ in transport.calls] == []
    if name != "swallows":
        assert SEEN[-1] == f"a-{name}"


def test_outside_an_activity_or_in_a_local_one_it_is_refused() -> None:
    with pytest.raises(RuntimeError, match="not in an activity"):
        activity.raise_complete_async()
    info = activity.Info(activity_id="1", activity_type="t", attempt=1, namespace="default", workflow_id="w",
                         run_id="r", workflow_type="W", task_queue="q", task_token="", scheduled_event_id=0,
                         heartbeat_details=(), scheduled_time=None, started_time=None,  # type: ignore[arg-type]
                         schedule_to_close_timeout=None, start_to_close_timeout=None, heartbeat_timeout=None,
                         is_local=True)
    entered = set_context(ActivityContext(info, lambda details: None))
    try:
        with pytest.raises(RuntimeError, match="local activity"):
            activity.raise_complete_async()
    finally:
        reset_context(entered)
