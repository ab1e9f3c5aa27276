"""After a batch that woke services in this process (tasks handed to matching, replies,
closes), the shard loop gives the loop one turn before its next batch: the polls and waits
it woke answer first instead of after that batch's run (services/history/runner.py)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from services.history.engine import TimerFiring
from services.history.intake import Intake
from services.history.runner import BatchRunner

pytestmark = pytest.mark.timeout(10)


def _firing(key: str) -> TimerFiring:
    return TimerFiring(key, 0, "default", "wf", "run", "user_timer", 1, 1)


async def _order(woke_something: bool) -> list[str]:
    order: list[str] = []
    intake = Intake()
    runner = BatchRunner.__new__(BatchRunner)
    runner.intake = intake
    runner._handed = False
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    async def process(batch: list[Any], early: Any = None) -> None:
        order.append(f"batch {batch[0].key}")
        if batch[0].key == "t1":
            # What a hand-over does: a poll woken, to answer on the next loop turn; and the
            # next batch's work already waiting in the inbox.
            loop.call_soon(order.append, "poll answered")
            runner._handed = woke_something
            await intake.fire(_firing("t2"))
        else:
            done.set()

    runner.process = process  # type: ignore[method-assign]
    await intake.fire(_firing("t1"))
    running = asyncio.create_task(runner.run())
    try:
        await asyncio.wait_for(done.wait(), 5)
    finally:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
    return order


async def test_what_a_batch_woke_runs_before_the_next_batch() -> None:
    assert (await _order(True))[:3] == ["batch t1", "poll answered", "batch t2"]


async def test_hand_over_says_whether_it_woke_anything() -> None:
    runner = BatchRunner.__new__(BatchRunner)
    runner._handed = False
    taken: list[Any] = []
    runner.tasks = SimpleNamespace(hand_over=taken.extend)  # type: ignore[assignment]
    runner.replies = SimpleNamespace(replies=taken.extend, closed=taken.extend)  # type: ignore[assignment]
    nothing = SimpleNamespace(local_replies=[])
    runner._hand_over(nothing, [], [])  # type: ignore[arg-type]
    assert runner._handed is False
    runner._hand_over(nothing, [], [("run", {})])  # type: ignore[arg-type]
    assert runner._handed is True and taken == [("run", {})]


async def test_a_batch_that_woke_nothing_goes_straight_on() -> None:
    assert (await _order(False))[:2] == ["batch t1", "batch t2"]
