"""VisibilityConsumer.stop (services/visibility/consumer.py): its group consumer is stopped
whatever the loop's end raised."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.visibility.consumer import VisibilityConsumer
from tests.unit.services._stop_parts import Part

pytestmark = pytest.mark.timeout(10)


async def _fails_when_cancelled() -> None:
    try:
        await asyncio.Event().wait()
    finally:
        raise RuntimeError("the loop's clean-up failed")


async def test_a_loop_failing_at_its_cancel_still_lets_the_group_consumer_stop() -> None:
    stopped: list[str] = []
    visibility: Any = VisibilityConsumer("127.0.0.1:1", pool=None)
    await visibility._consumer.stop()  # the real client was never started: nothing of it runs
    visibility._consumer = Part("group consumer", stopped)
    visibility._task = asyncio.create_task(_fails_when_cancelled())
    await asyncio.sleep(0)
    await visibility.stop()
    assert stopped == ["group consumer"]
