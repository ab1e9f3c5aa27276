"""The visibility consumer (services/visibility/consumer.py): its group consumer is stopped
whatever the loop's end raised; a round's take and fold let the event loop run between slices."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest

from services.common.kafka import HISTORY, Published
from services.visibility import shortcut
from services.visibility.consumer import VisibilityConsumer, fold_in_slices, take_in_slices
from services.visibility.handover import Handover
from tests.unit.services._stop_parts import Part
from tests.unit.services.visibility.test_shortcut import _two_runs_and_two_unreadable

pytestmark = pytest.mark.timeout(10)
T = TypeVar("T")


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


async def _turns_during(work: Awaitable[T]) -> tuple[T, int]:
    """What ``work`` gives, and how many turns another task of the loop (as the shards beside
    visibility are) had while it ran."""
    turns = 0

    async def beside() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(beside())
    await asyncio.sleep(0)
    before = turns
    try:
        result = await work
    finally:
        other.cancel()
    return result, turns - before


async def test_a_rounds_fold_lets_the_loop_run_between_slices() -> None:
    values = _two_runs_and_two_unreadable() * 3  # 21 records: the same runs again, folded as once
    skipped: list[int] = []
    folded, during = await _turns_during(fold_in_slices(values, lambda index, exc: skipped.append(index), size=4))
    assert during >= 5  # a turn between each of the six slices
    assert skipped == [2, 4, 9, 11, 16, 18]
    assert folded == shortcut.ShortcutDecoder().fold(values)


async def test_a_rounds_take_from_the_hand_over_lets_the_loop_run_between_slices() -> None:
    handover = Handover()
    offsets = range(10, 21)
    handover.published([(HISTORY, b"k", f"v{o}".encode(), ()) for o in offsets],
                       [Published(HISTORY, 0, o) for o in offsets])
    taken, during = await _turns_during(take_in_slices(handover, 0, 10, size=4))
    assert taken == [f"v{o}".encode() for o in offsets]
    assert during >= 2  # 11 records, 4 a turn: a turn after the first and the second slice
    assert not handover.waiting(0)
