"""tests/helpers.py: a wait ends within its timeout, also when one look of it hangs; no I/O."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers import NotYet, eventually

pytestmark = pytest.mark.timeout(10)


async def test_a_check_that_hangs_fails_the_wait_within_its_timeout_naming_the_check() -> None:
    looks = 0

    async def answer_then_hang() -> bool:
        nonlocal looks
        looks += 1
        if looks > 1:
            await asyncio.Event().wait()  # a call that never answers
        return False

    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(NotYet, match=r"the answer did not hold within 0.3 s: its check .*answer_then_hang"
                                     r" \(test_helpers.py:\d+\) hung \(last: False\)"):
        await eventually(answer_then_hang, timeout=0.3, every=0.01, what="the answer")
    assert loop.time() - began < 1.0


async def test_a_timeout_of_the_check_itself_is_not_yet() -> None:
    looks = 0

    async def times_out_once() -> bool:
        nonlocal looks
        looks += 1
        if looks == 1:
            async with asyncio.timeout(0.01):
                await asyncio.Event().wait()
        return True

    assert await eventually(times_out_once, timeout=5, every=0.01)
    assert looks == 2
