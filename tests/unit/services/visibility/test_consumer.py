"""The visibility consumer (services/visibility/consumer.py): its group consumer is stopped
whatever the loop's end raised; a round's fold lets the event loop run between slices."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.visibility import shortcut
from services.visibility.consumer import VisibilityConsumer, fold_in_slices
from tests.unit.services._stop_parts import Part
from tests.unit.services.visibility.test_shortcut import _two_runs_and_two_unreadable

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


async def test_a_rounds_fold_lets_the_loop_run_between_slices() -> None:
    values = _two_runs_and_two_unreadable() * 3  # 21 records: the same runs again, folded as once
    turns = 0

    async def beside() -> None:  # another task of the loop, as the shards beside visibility are
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(beside())
    await asyncio.sleep(0)
    before = turns
    skipped: list[int] = []
    folded = await fold_in_slices(values, lambda index, exc: skipped.append(index), size=4)
    during = turns - before
    other.cancel()
    assert during >= 5  # a turn between each of the six slices
    assert skipped == [2, 4, 9, 11, 16, 18]
    assert folded == shortcut.ShortcutDecoder().fold(values)
