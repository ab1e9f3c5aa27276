"""The armed runs of timer run-ahead, grouped by the millisecond they come due: one loop timer
per group, every run due by then handed over at once (earliest first), nothing before its due
time by the wall clock, and a run disarmed or re-armed is never handed over for the old time."""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from kadence._worker.timer_wakes import Due, TimerWakes
from tests.helpers import eventually

pytestmark = pytest.mark.timeout(30)


def _now_ms() -> int:
    return math.ceil(time.time() * 1000)


async def test_runs_due_at_the_same_millisecond_share_one_loop_timer_and_wake_together() -> None:
    handed: list[list[Due[str]]] = []
    wakes: TimerWakes[str] = TimerWakes(handed.append)
    due_ms = _now_ms() + 200
    for i in range(50):
        wakes.arm(f"run-{i}", f"runner-{i}", "1", due_ms)
    assert len(wakes) == 50 and len(wakes._handles) == 1
    [lot] = await eventually(lambda: handed, what="the group handed over")
    assert [d.run_id for d in lot] == [f"run-{i}" for i in range(50)]
    assert {d.due_ms for d in lot} == {due_ms} and time.time() * 1000 >= due_ms
    assert not wakes and not wakes._handles


async def test_every_group_due_by_then_comes_in_one_lot_earliest_first() -> None:
    handed: list[list[Due[str]]] = []
    wakes: TimerWakes[str] = TimerWakes(handed.append)
    base = _now_ms() - 10  # all three due already, as when the loop was busy past them
    wakes.arm("late", "r", "1", base + 2)
    wakes.arm("early", "r", "1", base)
    wakes.arm("middle", "r", "1", base + 1)
    assert len(wakes._handles) == 3
    [lot] = await eventually(lambda: handed, what="the groups handed over")
    assert [d.run_id for d in lot] == ["early", "middle", "late"]
    await asyncio.sleep(0.05)
    assert len(handed) == 1  # the other groups' loop timers hand over nothing again


async def test_a_run_disarmed_or_armed_again_is_not_handed_over_for_its_old_time() -> None:
    handed: list[list[Due[str]]] = []
    wakes: TimerWakes[str] = TimerWakes(handed.append)
    soon = _now_ms() + 50
    wakes.arm("gone", "r", "1", soon)
    wakes.arm("moved", "r", "1", soon)
    wakes.disarm("gone")
    wakes.arm("moved", "r", "2", soon + 150)
    assert len(wakes) == 1 and list(wakes._handles) == [soon + 150]  # the emptied group's timer went
    [lot] = await eventually(lambda: handed, what="the moved run handed over")
    assert lot == [Due("moved", "r", "2", soon + 150)]


async def test_nothing_is_handed_over_before_its_due_time_by_the_wall_clock() -> None:
    handed: list[list[Due[str]]] = []
    wakes: TimerWakes[str] = TimerWakes(handed.append)
    due_ms = _now_ms() + 100
    wakes.arm("run", "r", "1", due_ms)
    # The group's loop timer fires early (the loop's clock is not the wall clock): it waits again.
    wakes._fire(due_ms)
    assert handed == [] and "run" in wakes and len(wakes._handles) == 1
    assert wakes.take_due(due_ms - 1) == []
    [lot] = await eventually(lambda: handed, what="the run handed over")
    assert lot[0].run_id == "run" and time.time() * 1000 >= due_ms


async def test_a_closed_set_hands_over_nothing() -> None:
    handed: list[list[Due[str]]] = []
    wakes: TimerWakes[str] = TimerWakes(handed.append)
    wakes.arm("run", "r", "1", _now_ms() + 30)
    [handle] = wakes._handles.values()
    wakes.close()
    assert handle.cancelled() and not wakes
    await asyncio.sleep(0.08)
    assert handed == []
