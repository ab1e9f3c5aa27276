"""How the timer queue hands due rows to the intake (services/history/timers.py): from a
handle on the event loop's clock, in the loop turn it runs (no task to wake), never before
``fire_at`` by the wall clock, and through the queue's task, in order, when the intake is full."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from services.common import outage
from services.history import engine
from services.history.intake import Intake
from services.history.timers import TimerQueue
from tests.helpers import eventually

pytestmark = pytest.mark.timeout(15)
log = logging.getLogger(__name__)


class Store:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    async def timers_before(self, shard_id: int, until: int) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["fire_at"] <= until]


def _row(ref: int, fire_at: int) -> dict[str, Any]:
    return {"timer_key": f"run-{ref}/timer/{ref}", "fire_at": fire_at, "namespace": "default",
            "workflow_id": f"wf-{ref}", "run_id": f"run-{ref}", "kind": "timer", "ref": ref, "attempt": 0}


def _now_ms() -> int:
    return int(time.time() * 1000)


class Sink:
    """Records each firing handed over, the wall clock then and whether a task handed it."""

    def __init__(self, room: int = 1_000) -> None:
        self.room = room
        self.offered: list[tuple[str, float, bool]] = []
        self.fired: list[str] = []

    def offer(self, firing: engine.TimerFiring) -> bool:
        if self.room <= 0:
            return False
        self.room -= 1
        self.offered.append((firing.key, time.time() * 1000, asyncio.current_task() is not None))
        return True

    async def fire(self, firing: engine.TimerFiring) -> None:
        self.fired.append(firing.key)


async def test_a_due_row_is_handed_over_by_the_loop_handle_itself_never_before_its_time() -> None:
    due = _now_ms() + 150
    sink = Sink()
    queue = TimerQueue(0, Store([_row(1, due), _row(2, due + 60)]), sink.fire, outage.Backoff("timers", log),
                       offer=sink.offer)
    task = asyncio.create_task(queue.run())
    try:
        await eventually(lambda: len(sink.offered) == 2, what="both rows handed over")
    finally:
        task.cancel()
    assert [k for k, _, _ in sink.offered] == ["run-1/timer/1", "run-2/timer/2"] and not sink.fired
    # Handed over from the handle's callback, with no task to wake in between.
    assert not any(by_task for _, _, by_task in sink.offered)
    assert sink.offered[0][1] >= due and sink.offered[1][1] >= due + 60
    assert set(queue.inflight) == {"run-1/timer/1", "run-2/timer/2"}


async def test_the_handle_re_arms_for_a_row_not_yet_due_by_the_wall_clock() -> None:
    # The loop's clock is not the wall clock: a handle that runs before fire_at by the wall
    # clock hands nothing over and is armed again.
    sink = Sink()
    due = _now_ms() + 10_000
    queue = TimerQueue(0, Store([_row(1, due)]), sink.fire, outage.Backoff("timers", log), offer=sink.offer)
    await queue._reload(_now_ms())
    queue._arm()
    assert queue._handle is not None
    queue._handle.cancel()
    queue._due()  # as if the loop ran it early
    assert not sink.offered and queue._handle is not None and queue._armed_at == due
    queue._handle.cancel()


async def test_a_row_added_earlier_than_the_armed_one_fires_at_its_own_time() -> None:
    sink = Sink()
    queue = TimerQueue(0, Store([_row(1, _now_ms() + 5_000)]), sink.fire, outage.Backoff("timers", log),
                       offer=sink.offer)
    task = asyncio.create_task(queue.run())
    try:
        await eventually(lambda: queue._armed_at > 0, what="the handle armed")
        early = _now_ms() + 50
        queue._add(engine.TimerFiring("run-2/timer/2", early, "default", "wf-2", "run-2", "timer", 2, 0))
        await eventually(lambda: sink.offered, what="the earlier row handed over")
    finally:
        task.cancel()
    assert sink.offered[0][0] == "run-2/timer/2" and sink.offered[0][1] >= early
    assert "run-1/timer/1" in queue.rows  # still queued


async def test_with_the_intake_full_the_task_hands_rows_over_in_order_once_there_is_room() -> None:
    intake = Intake(inbox_size=2)
    due = _now_ms() + 100
    rows = [_row(i, due) for i in range(5)]
    queue = TimerQueue(0, Store(rows), intake.fire, outage.Backoff("timers", log), offer=intake.fire_nowait)
    task = asyncio.create_task(queue.run())
    taken: list[str] = []
    try:
        while len(taken) < 5:
            item = await asyncio.wait_for(intake.next(), 5)
            assert isinstance(item, engine.TimerFiring)
            taken.append(item.key)
    finally:
        task.cancel()
    assert taken == [r["timer_key"] for r in rows]  # in fire_at (then key) order, each once
    assert not queue.rows and set(queue.inflight) == set(taken)


async def test_a_stopped_queue_leaves_no_handle_armed() -> None:
    sink = Sink()
    queue = TimerQueue(0, Store([_row(1, _now_ms() + 5_000)]), sink.fire, outage.Backoff("timers", log),
                       offer=sink.offer)
    task = asyncio.create_task(queue.run())
    await eventually(lambda: queue._handle is not None, what="the handle armed")
    handle = queue._handle
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert handle is not None and handle.cancelled() and queue._handle is None


async def test_a_firing_whose_offer_fails_is_handed_over_by_the_task_not_lost() -> None:
    sink = Sink()
    calls = 0

    def failing_offer(firing: engine.TimerFiring) -> bool:
        nonlocal calls
        calls += 1
        raise RuntimeError("intake broken")

    queue = TimerQueue(0, Store([_row(1, _now_ms() + 30)]), sink.fire, outage.Backoff("timers", log),
                       offer=failing_offer)
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    task = asyncio.create_task(queue.run())
    try:
        await eventually(lambda: sink.fired, what="the task handed the firing over")
    finally:
        task.cancel()
        loop.set_exception_handler(None)
    assert calls == 1 and sink.fired == ["run-1/timer/1"] and not queue._overflow
    assert errors and isinstance(errors[0].get("exception"), RuntimeError)  # said, not swallowed


async def test_every_row_added_wakes_the_queues_task_even_one_after_the_armed_row() -> None:
    sink = Sink()
    queue = TimerQueue(0, Store([_row(1, _now_ms() + 5_000)]), sink.fire, outage.Backoff("timers", log),
                       offer=sink.offer)
    task = asyncio.create_task(queue.run())
    try:
        await eventually(lambda: queue._armed_at > 0 and not queue.wake.is_set(), what="the task asleep, armed")
        armed = queue._armed_at
        queue._add(engine.TimerFiring("run-2/timer/2", armed + 1_000, "default", "wf-2", "run-2", "timer", 2, 0))
        assert queue.wake.is_set()
        await eventually(lambda: not queue.wake.is_set(), what="the task asleep again")
        assert queue._armed_at == armed  # still armed for the earlier row
    finally:
        task.cancel()
