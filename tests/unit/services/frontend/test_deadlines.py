"""SameLengthWaits (services/frontend/deadlines.py): asyncio.timeout's behaviour for waits of
one length, with one timer for all of them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.frontend.deadlines import SameLengthWaits

pytestmark = pytest.mark.timeout(10)


async def test_a_wait_that_runs_out_raises_timeout_error() -> None:
    waits = SameLengthWaits(0.05, slack=0.01)
    with pytest.raises(TimeoutError):
        async with waits.wait():
            await asyncio.sleep(5)


async def test_a_block_that_ends_in_time_is_untouched_and_later_ones_still_run_out() -> None:
    waits = SameLengthWaits(0.1, slack=0.01)
    async with waits.wait():
        await asyncio.sleep(0)
    await asyncio.sleep(0.15)  # the timer armed for the first fires with nothing to expire
    with pytest.raises(TimeoutError):
        async with waits.wait():
            await asyncio.sleep(5)
    async with waits.wait():  # and the next one is bounded again, not left without a timer
        pass
    assert len(waits) <= 1


async def test_many_waits_share_one_timer_and_each_runs_out_on_its_own() -> None:
    waits = SameLengthWaits(0.1, slack=0.01)
    release = asyncio.Event()

    async def block(hold: bool) -> str:
        try:
            async with waits.wait():
                if hold:
                    await asyncio.sleep(5)
                else:
                    await release.wait()
            return "done"
        except TimeoutError:
            return "timed out"

    tasks = [asyncio.create_task(block(i % 2 == 0)) for i in range(6)]
    await asyncio.sleep(0.01)
    assert waits._timer is not None  # one timer for the six
    release.set()
    assert await asyncio.gather(*tasks) == ["timed out", "done"] * 3


async def test_a_cancellation_from_elsewhere_is_not_turned_into_a_timeout() -> None:
    waits = SameLengthWaits(5)

    async def block() -> None:
        async with waits.wait():
            await asyncio.sleep(5)

    task = asyncio.create_task(block())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    waits.close()



async def test_an_expiry_the_block_swallowed_is_taken_back_as_asyncio_timeout_does() -> None:
    async def swallowing() -> None:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            pass  # the block ends normally, having caught the expiry's cancellation

    async def counts(bound: Any) -> int:  # asyncio.timeout's block, or one of SameLengthWaits
        async with bound:
            await swallowing()
        task = asyncio.current_task()
        assert task is not None
        return task.cancelling()  # a cancellation still counted would turn a later one into a timeout

    expected = await asyncio.create_task(counts(asyncio.timeout(0.02)))
    assert await asyncio.create_task(counts(SameLengthWaits(0.02, slack=0.01).wait())) == expected == 0
