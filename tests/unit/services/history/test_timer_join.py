"""Timers a batch takes when it starts (services/history/timer_join.py): those due, and one
coming due within JOIN_MS when the batch holds commands; never one not yet due."""

from __future__ import annotations

import asyncio
import logging
import time
from types import SimpleNamespace
from typing import Any

import pytest

from services.common import outage
from services.history import engine
from services.history.builder import timer_key
from services.history.intake import Intake
from services.history.runner import BatchRunner
from services.history.timer_join import JOIN_MS, with_due_timers
from services.history.timers import TimerQueue

pytestmark = pytest.mark.timeout(10)
log = logging.getLogger(__name__)


class Store:
    def __init__(self, *fire_at: int) -> None:
        self.rows = [{"timer_key": timer_key(f"run{i}", "timer", 1), "fire_at": at, "namespace": "default",
                      "workflow_id": f"wf{i}", "run_id": f"run{i}", "kind": "timer", "ref": 1, "attempt": 0}
                     for i, at in enumerate(fire_at)]

    async def timers_before(self, shard_id: int, until: int) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["fire_at"] <= until]


async def _queue(*fire_at: int) -> TimerQueue:
    async def fire(firing: engine.TimerFiring) -> None:
        raise AssertionError("only the batch takes timers here")

    queue = TimerQueue(0, Store(*fire_at), fire, outage.Backoff("timers", log))
    await queue._reload(int(time.time() * 1000))
    return queue


def _commands(offset: int = 0) -> list[Any]:
    return [SimpleNamespace(offset=offset)]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _firings(batch: list[Any]) -> list[engine.TimerFiring]:
    return [item for item in batch if isinstance(item, engine.TimerFiring)]


async def test_a_batch_of_commands_waits_for_a_timer_about_to_come_due_and_fires_it() -> None:
    due = _now_ms() + 1
    queue, intake = await _queue(due), Intake()
    batch = await with_due_timers([_commands()], intake, queue)
    taken_at = time.time() * 1000
    assert [f.fire_at for f in _firings(batch)] == [due]
    assert taken_at >= due  # never before its time
    assert queue.inflight and not queue.rows


async def test_a_timer_already_due_joins_without_waiting() -> None:
    queue, intake = await _queue(_now_ms() - 5, _now_ms() + 10_000), Intake()
    batch = await with_due_timers([_commands()], intake, queue)
    assert len(_firings(batch)) == 1  # the due one; the later one stays queued
    assert len(queue.rows) == 1


async def test_a_timer_due_later_than_the_join_window_is_left_to_the_queue() -> None:
    queue, intake = await _queue(_now_ms() + int(JOIN_MS) + 200), Intake()
    batch = await with_due_timers([_commands()], intake, queue)
    assert not _firings(batch) and queue.rows


async def test_a_batch_of_timers_only_does_not_wait_for_the_next() -> None:
    first = engine.TimerFiring("k", _now_ms(), "default", "wf", "run", "timer", 1, 0)
    queue, intake = await _queue(_now_ms() + int(JOIN_MS)), Intake()
    assert await with_due_timers([first], intake, queue) == [first]


async def test_what_reaches_the_inbox_during_the_wait_joins_the_batch() -> None:
    queue, intake = await _queue(_now_ms() + 2), Intake()
    waiting = asyncio.create_task(with_due_timers([_commands(0)], intake, queue))
    await asyncio.sleep(0)
    await intake.feed(_commands(1))
    batch = await waiting
    assert [r.offset for item in batch if isinstance(item, list) for r in item] == [0, 1]
    assert len(_firings(batch)) == 1


async def test_the_shard_loop_runs_an_imminent_timer_in_the_batch_of_commands_it_starts() -> None:
    """Before timer_join, the loop ran the commands alone and the timer in the next batch,
    after the first one's commit."""
    runner = BatchRunner.__new__(BatchRunner)
    runner.intake = intake = Intake()
    runner.timers = queue = await _queue(_now_ms() + 1)
    runner._handed = False
    batches: list[list[Any]] = []
    done = asyncio.Event()

    async def process(batch: list[Any], early: Any = None) -> None:
        batches.append(batch)
        done.set()

    runner.process = process  # type: ignore[method-assign]
    await intake.feed(_commands(0))
    running = asyncio.create_task(runner.run())
    try:
        await asyncio.wait_for(done.wait(), 5)
    finally:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
    assert len(batches) == 1 and len(_firings(batches[0])) == 1
    assert queue.inflight
