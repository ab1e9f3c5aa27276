"""The worker's poll size and concurrency follow the backlog (kadence/_worker/adaptive.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from kadence._worker.adaptive import AdaptiveLimits, FixedLimits
from kadence._worker.poller import Poller, Slots


def test_limits_start_at_the_floors() -> None:
    limits = AdaptiveLimits(max_poll_size=100, max_concurrency=1000)
    assert (limits.poll_size(), limits.concurrency()) == (10, 50)


def test_floors_never_exceed_the_ceilings() -> None:
    limits = AdaptiveLimits(max_poll_size=1, max_concurrency=3)
    assert (limits.poll_size(), limits.concurrency()) == (1, 3)


def test_full_answers_grow_poll_size_and_concurrency_up_to_the_ceilings() -> None:
    limits = AdaptiveLimits(max_poll_size=100, max_concurrency=1000)
    for _ in range(20):  # a backlog: every poll comes back full, every slot taken
        asked = limits.poll_size()
        limits.observed(asked, asked, busy=limits.concurrency())
    assert (limits.poll_size(), limits.concurrency()) == (100, 1000)


def test_full_answers_with_slots_to_spare_grow_only_the_poll_size() -> None:
    limits = AdaptiveLimits(max_poll_size=100, max_concurrency=1000)
    limits.observed(10, 10, busy=10)
    assert (limits.poll_size(), limits.concurrency()) == (40, 50)


def test_a_burst_reaches_the_sdk_ceilings_within_three_full_answers() -> None:
    # A burst's tasks wait through every poll the limits need to catch up with the backlog.
    limits = AdaptiveLimits(max_poll_size=100, max_concurrency=1000)
    seen = []
    for _ in range(3):  # a backlog: each poll comes back full and every slot is taken
        asked = limits.poll_size()
        limits.observed(asked, asked, busy=limits.concurrency())
        seen.append((limits.poll_size(), limits.concurrency()))
    assert seen[1][0] == 100  # the poll size at its ceiling after two full answers
    assert seen[2] == (100, 1000)


def test_empty_answers_shrink_back_to_the_floors_but_not_below_what_runs() -> None:
    limits = AdaptiveLimits(max_poll_size=100, max_concurrency=1000)
    for _ in range(20):
        limits.observed(limits.poll_size(), limits.poll_size(), busy=limits.concurrency())
    limits.observed(100, 0, busy=700)
    assert (limits.poll_size(), limits.concurrency()) == (50, 700)
    for _ in range(20):
        limits.observed(limits.poll_size(), 0, busy=0)
    assert (limits.poll_size(), limits.concurrency()) == (10, 50)


def test_a_short_answer_keeps_the_limits() -> None:
    limits = AdaptiveLimits(max_poll_size=100, max_concurrency=1000)
    limits.observed(10, 10, busy=60)
    before = (limits.poll_size(), limits.concurrency())
    limits.observed(20, 5, busy=5)
    assert (limits.poll_size(), limits.concurrency()) == before


def test_fixed_limits_do_not_move() -> None:
    limits = FixedLimits(5, 7)
    limits.observed(5, 5, busy=7)
    limits.observed(5, 0, busy=0)
    assert (limits.poll_size(), limits.concurrency()) == (5, 7)
    with pytest.raises(ValueError):
        FixedLimits(0, 1)


async def test_slots_resize_lets_more_run_and_a_smaller_size_waits_for_releases() -> None:
    slots = Slots(2)
    assert await slots.acquire_some(5) == 2
    await slots.resize(4)
    assert (slots.size, slots.free) == (4, 2)
    await slots.resize(1)  # three taken over the new size of one: nothing is taken back
    assert slots.free == -1
    waiting = asyncio.ensure_future(slots.acquire_some(1))
    await slots.release(1)
    await asyncio.sleep(0)
    assert not waiting.done()
    await slots.release(1)
    assert await asyncio.wait_for(waiting, 5) == 1


async def test_a_poller_asks_for_more_per_poll_while_its_answers_come_back_full() -> None:
    asked: list[int] = []
    done = asyncio.Event()

    class Backlog:  # a queue with more tasks than any poll asks for
        async def call(self, method: str, path: str, *, body: Mapping[str, Any], **_: Any) -> dict[str, Any]:
            asked.append(int(body["max_tasks"]))
            if len(asked) >= 6:
                done.set()
                await asyncio.Event().wait()
            return {"tasks": [{"task_token": f"t{len(asked)}-{i}"} for i in range(int(body["max_tasks"]))]}

    async def process(task: Mapping[str, Any]) -> None:
        pass

    limits = AdaptiveLimits(max_poll_size=100, max_concurrency=1000)
    slots = Slots(limits.concurrency())
    poller = Poller(Backlog(), "/workflow-tasks/poll", process=process, slots=slots,  # type: ignore[arg-type]
                    identity="test", max_tasks=100, wait_seconds=1, limits=limits)
    running = asyncio.create_task(poller.run())
    await asyncio.wait_for(done.wait(), 5)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert asked[0] == 10 and asked[-1] > asked[0]
    assert asked == sorted(asked)
