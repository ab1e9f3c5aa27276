"""After a commit that woke services in this process (tasks handed to matching, replies,
closes), the shard loop gives the loop one turn before the batch's bookkeeping and its next
batch: the polls and waits it woke answer first (services/history/runner.py)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from services.history.runner import BatchRunner

pytestmark = pytest.mark.timeout(10)


def _runner(order: list[str]) -> BatchRunner:
    runner = BatchRunner.__new__(BatchRunner)

    def after_commit(ctx: Any, mutations: Any, outbox: Any) -> None:
        order.append("bookkeeping")

    runner._after_commit = after_commit  # type: ignore[method-assign]
    return runner


async def test_what_a_commit_woke_runs_before_its_bookkeeping() -> None:
    order: list[str] = []
    runner = _runner(order)
    # What a hand-over does: a poll woken, to answer on the next loop turn.
    asyncio.get_running_loop().call_soon(order.append, "poll answered")
    await runner._committed(None, [], [], woke=True)  # type: ignore[arg-type]
    assert order == ["poll answered", "bookkeeping"]


async def test_a_commit_that_woke_nothing_does_its_bookkeeping_at_once() -> None:
    order: list[str] = []
    runner = _runner(order)
    asyncio.get_running_loop().call_soon(order.append, "something else")
    await runner._committed(None, [], [], woke=False)  # type: ignore[arg-type]
    assert order == ["bookkeeping"]


async def test_the_bookkeeping_is_done_even_if_the_loop_is_cancelled_in_that_turn() -> None:
    order: list[str] = []
    runner = _runner(order)
    task = asyncio.create_task(runner._committed(None, [], [], woke=True))  # type: ignore[arg-type]
    await asyncio.sleep(0)  # the task is now in its turn's wait
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert order == ["bookkeeping"]


async def test_hand_over_says_whether_it_woke_anything() -> None:
    runner = BatchRunner.__new__(BatchRunner)
    taken: list[Any] = []
    runner.tasks = SimpleNamespace(hand_over=taken.extend)  # type: ignore[assignment]
    runner.replies = SimpleNamespace(replies=taken.extend, closed=taken.extend)  # type: ignore[assignment]
    nothing = SimpleNamespace(local_replies=[])
    assert runner._hand_over(nothing, [], []) is False  # type: ignore[arg-type]
    assert runner._hand_over(nothing, [], [("run", {})]) is True  # type: ignore[arg-type]
    assert taken == [("run", {})]
