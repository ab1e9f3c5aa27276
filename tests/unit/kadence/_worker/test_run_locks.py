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
        async with locks.hold(run_id):
            order.append(f"{name} in")
            await asyncio.sleep(0.01)
            order.append(f"{name} out")

    await asyncio.gather(task("r1", "a"), task("r1", "b"), task("r2", "c"))
    assert order.index("a out") < order.index("b in")  # same run: one after the other
    assert order.index("c in") < order.index("a out")  # another run: alongside
    assert len(locks) == 0


async def test_a_cancelled_waiter_gives_its_turn_back() -> None:
    locks = _RunLocks()
    holder_in = asyncio.Event()
    holder_may_go = asyncio.Event()

    async def holder() -> None:
        async with locks.hold("r"):
            holder_in.set()
            await holder_may_go.wait()

    async def waiter() -> None:
        async with locks.hold("r"):
            pass

    h = asyncio.create_task(holder())
    await holder_in.wait()
    t = asyncio.create_task(waiter())
    await asyncio.sleep(0)
    t.cancel()
    with pytest.raises(asyncio.CancelledError):
        await t
    assert len(locks) == 1  # the holder's alone
    holder_may_go.set()
    await h
    assert len(locks) == 0


async def test_a_body_that_raises_releases_the_run() -> None:
    locks = _RunLocks()
    with pytest.raises(RuntimeError):
        async with locks.hold("r"):
            raise RuntimeError("the task failed")
    assert len(locks) == 0
    async with locks.hold("r"):  # free again
        pass
    assert len(locks) == 0


async def test_waiting_tasks_get_the_run_in_the_order_they_came() -> None:
    locks = _RunLocks()
    order: list[str] = []

    async def task(name: str) -> None:
        async with locks.hold("r"):
            order.append(name)
            await asyncio.sleep(0)

    async with locks.hold("r"):
        tasks = []
        for name in ("b", "c", "d"):
            tasks.append(asyncio.create_task(task(name)))
            await asyncio.sleep(0)  # it waits now, behind those before it
    await asyncio.gather(*tasks)
    assert order == ["b", "c", "d"]
    assert len(locks) == 0


async def test_a_waiter_cancelled_as_it_is_handed_the_run_passes_it_on() -> None:
    locks = _RunLocks()
    third_in = asyncio.Event()

    async def waiter(entered: asyncio.Event | None = None) -> None:
        async with locks.hold("r"):
            if entered is not None:
                entered.set()

    async with locks.hold("r"):
        second = asyncio.create_task(waiter())
        third = asyncio.create_task(waiter(third_in))
        await asyncio.sleep(0)  # both wait now
    # Leaving handed the run to the second task, which has not run since: cancelled now.
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    await asyncio.wait_for(third_in.wait(), timeout=5)  # the run went on to the third
    await third
    assert len(locks) == 0


async def test_a_waiter_cancelled_just_before_the_run_is_let_go_ends_cancelled() -> None:
    # The holder lets go between the waiter's cancellation and its next step: the cancelled
    # turn is passed over (and the run freed), and the waiter ends as cancelled, nothing else.
    locks = _RunLocks()
    held = locks.hold("r")
    await held.__aenter__()

    async def waiter() -> None:
        async with locks.hold("r"):
            pass

    t = asyncio.create_task(waiter())
    await asyncio.sleep(0)  # waiting for its turn
    t.cancel()
    await held.__aexit__(None, None, None)
    with pytest.raises(asyncio.CancelledError):
        await t
    assert len(locks) == 0
