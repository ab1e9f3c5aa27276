"""The worker's per-run locks: one task of a run at a time, and no lock kept once no task
holds or waits for it."""

from __future__ import annotations

import asyncio

import pytest

from kadence._worker.workflow_tasks import _RunLocks

pytestmark = pytest.mark.timeout(30)


async def test_tasks_of_one_run_take_turns_and_the_lock_goes_when_unused() -> None:
    locks = _RunLocks()
    order: list[str] = []

    async def task(run_id: str, name: str) -> None:
        lock = locks.take(run_id)
        try:
            async with lock:
                order.append(f"{name} in")
                await asyncio.sleep(0.01)
                order.append(f"{name} out")
        finally:
            locks.give_back(run_id)

    await asyncio.gather(task("r1", "a"), task("r1", "b"), task("r2", "c"))
    assert order.index("a out") < order.index("b in")  # same run: one after the other
    assert order.index("c in") < order.index("a out")  # another run: alongside
    assert len(locks) == 0


async def test_a_cancelled_waiter_gives_its_turn_back() -> None:
    locks = _RunLocks()
    held = locks.take("r")
    await held.acquire()

    async def waiter() -> None:
        lock = locks.take("r")
        try:
            async with lock:
                pass
        finally:
            locks.give_back("r")

    t = asyncio.create_task(waiter())
    await asyncio.sleep(0)
    t.cancel()
    with pytest.raises(asyncio.CancelledError):
        await t
    held.release()
    locks.give_back("r")
    assert len(locks) == 0
