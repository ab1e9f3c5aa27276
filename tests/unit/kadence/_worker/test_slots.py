"""Slots: a poller waits for a free slot, a release or a larger limit wakes it, and a
waiter cancelled while waiting takes nothing and stops no one else."""

from __future__ import annotations

import asyncio

import pytest

from kadence._worker.poller import Slots

pytestmark = pytest.mark.timeout(30)


async def test_takes_what_is_free_and_waits_for_a_release() -> None:
    slots = Slots(3)
    assert await slots.acquire_some(2) == 2
    assert await slots.acquire_some(5) == 1
    waiting = asyncio.create_task(slots.acquire_some(4))
    await asyncio.sleep(0)
    assert not waiting.done()
    await slots.release(2)
    assert await waiting == 2
    assert slots.free == 0


async def test_a_larger_limit_wakes_a_waiter_and_a_smaller_one_goes_below_zero() -> None:
    slots = Slots(1)
    await slots.acquire_some(1)
    waiting = asyncio.create_task(slots.acquire_some(3))
    await asyncio.sleep(0)
    await slots.resize(3)
    assert await waiting == 2
    await slots.resize(1)
    assert slots.free == -2
    await slots.release(2)
    assert slots.free == 0 and slots.size == 1


async def test_a_cancelled_waiter_takes_nothing_and_the_others_still_wake() -> None:
    slots = Slots(1)
    await slots.acquire_some(1)
    first = asyncio.create_task(slots.acquire_some(1))
    second = asyncio.create_task(slots.acquire_some(1))
    await asyncio.sleep(0)
    first.cancel()
    await slots.release(1)
    assert await second == 1
    with pytest.raises(asyncio.CancelledError):
        await first
    assert slots.free == 0
