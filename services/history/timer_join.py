"""Timers a batch takes when it starts: those due, and one about to be if the batch waits
a moment for it.

A shard commits one batch at a time, and a commit is a PostgreSQL round trip with its
fsync (milliseconds, tens of them on a loaded machine). A timer that comes due just after a
batch of commands started waits for that batch's commit and then for its own: under a
burst of timers, where the woken workflows' answers keep the shard busy, that wait was most
of a timer's lateness. So a batch starting with commands first takes every timer due by
then (the timer queue's own wake-up can be late while the event loop is busy), and when a
timer comes due within :data:`JOIN_MS` it waits for it and takes it along: the commands
are at most that much later, the timer is a whole commit earlier. A batch of timer
firings only does not wait (its first timer would be late by the wait). Nothing is taken
before its ``fire_at`` by the wall clock: a timer never fires early.
"""

from __future__ import annotations

import asyncio
import time

from .intake import Batch, Intake
from .timers import TimerQueue

JOIN_MS = 2.0  # the longest a batch of commands waits for a timer about to come due


def _has_commands(batch: Batch) -> bool:
    return any(isinstance(item, list) and item for item in batch)


def _size(batch: Batch) -> int:
    return sum(len(item) if isinstance(item, list) else 1 for item in batch)


async def with_due_timers(batch: Batch, intake: Intake, timers: TimerQueue, *, join_ms: float = JOIN_MS) -> Batch:
    """``batch`` (as the intake made it) with the shard's timers due by now, after waiting
    up to ``join_ms`` for one about to come due when the batch holds commands."""
    due_in = timers.due_in(time.time() * 1000)
    if due_in is None:
        return batch
    if due_in > 0:
        if due_in > join_ms or not _has_commands(batch):
            return batch
        await asyncio.sleep(due_in / 1000)
        # What came meanwhile joins too: more commands, or the firings the queue's own loop
        # handed to the intake if it woke first.
        batch = batch + intake.waiting(_size(batch))
    return batch + timers.take_due(time.time() * 1000, max(1, intake.max_batch - _size(batch)))
