"""A shard's timer queue: an in-memory heap over the next window of its timer rows.

Every TIMER_WINDOW_MS / 2 the rows due within TIMER_WINDOW_MS are read from the store;
commits add and remove rows of the window as they write them (:meth:`TimerQueue.committed`).
A due timer goes to the shard's intake and is *in flight* until the commit of its firing
deletes its row; one the store refuses is given back (:meth:`TimerQueue.give_back`) and
loaded again later.

Rows come due on a handle of the event loop's own clock (:meth:`TimerQueue._due`), armed
for the earliest one, which hands them to the intake in the very loop turn it runs: under
a burst every turn of the loop is milliseconds of other work, and waking a task to do it
(a wait_for on an Event: a task per wait, then its time-out and cancellation) cost several
turns. The queue's task only loads the window, and hands over what the handle could not
(an intake full, or rows already due when loaded), waiting for room.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from services.common import outage

from .builder import Mutation
from .engine import TimerFiring

TIMER_WINDOW_MS = 30_000


class TimerStore(Protocol):
    async def timers_before(self, shard_id: int, until: int) -> Sequence[Any]: ...


class TimerQueue:
    def __init__(self, shard_id: int, store: TimerStore, fire: Callable[[TimerFiring], Awaitable[None]],
                 backoff: outage.Backoff, *, offer: Callable[[TimerFiring], bool] | None = None) -> None:
        """``fire`` hands a firing to the intake, waiting for room; ``offer`` hands it over
        without waiting and says whether it did (None: every firing goes through ``fire``)."""
        self.shard_id = shard_id
        self.store = store
        self._fire = fire
        self._offer = offer
        self._handle: asyncio.TimerHandle | None = None  # armed for the earliest queued row
        self._armed_at = -1  # that row's fire_at
        # Firings taken by the handle that the intake had no room for: the task hands them
        # over first, in order, before anything else comes due.
        self._overflow: list[TimerFiring] = []
        self.backoff = backoff
        # Entries of rows deleted or re-armed since stay until they come up, and are skipped then.
        self.heap: list[tuple[int, str]] = []
        self.rows: dict[str, TimerFiring] = {}  # the window's rows not in flight
        self.inflight: dict[str, TimerFiring] = {}  # handed to the intake, not yet committed
        # Run id -> its keys in rows or in flight: a run that closes forgets its timers in
        # O(its own timers), not O(every timer of the window).
        self.by_run: dict[str, set[str]] = {}
        self.horizon = 0
        self.wake = asyncio.Event()

    def _index(self, run_id: str, key: str) -> None:
        self.by_run.setdefault(run_id, set()).add(key)

    def _unindex(self, run_id: str, key: str) -> None:
        keys = self.by_run.get(run_id)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self.by_run[run_id]

    def _forget(self, key: str) -> None:
        """The key's row is gone (deleted by a commit): neither queued nor in flight any more."""
        queued, in_flight = self.rows.pop(key, None), self.inflight.pop(key, None)
        gone = queued or in_flight
        if gone is not None:
            self._unindex(gone.run_id, key)

    def _add(self, firing: TimerFiring) -> None:
        if firing.key in self.inflight:
            return
        self.rows[firing.key] = firing
        self._index(firing.run_id, firing.key)
        heapq.heappush(self.heap, (firing.fire_at, firing.key))
        # The task wakes on every row added, and re-arms the handle if this row comes first:
        # waking it only for an earlier row measured slower in bursts of starts (it moved the
        # loop's turns; see docs/architecture.md, timers).
        self.wake.set()

    def give_back(self, key: str) -> None:
        """A firing whose batch the store refused: its row stays, to be loaded again."""
        firing = self.inflight.pop(key, None)
        if firing is not None and key not in self.rows:
            self._unindex(firing.run_id, key)

    def committed(self, mutations: Sequence[Mutation], deleted: Sequence[str]) -> None:
        for key in deleted:
            self._forget(key)
        for m in mutations:
            for key in m.timers_delete:
                self._forget(key)
            if m.delete_all_timers:
                for key in self.by_run.pop(m.state.run_id, ()):
                    self.rows.pop(key, None)
                    self.inflight.pop(key, None)
            for key, fire_at, ns, wid, run_id, kind, ref, attempt in m.timers_upsert:
                # Re-armed: what was queued or in flight under this key is the old row.
                self._forget(key)
                if fire_at <= self.horizon:
                    self._add(TimerFiring(key, fire_at, ns, wid, run_id, kind, ref, attempt))

    def current(self, firing: TimerFiring) -> bool:
        """Whether ``firing``, handed to the intake, still stands for its row: a commit since
        may have deleted the row or re-armed its key, and firing it then would delete the
        re-armed row (the timer would be lost)."""
        return self.inflight.get(firing.key) is firing

    def next_due(self, now: float) -> TimerFiring | None:
        """The next row due by ``now``, taken out of the queue and put in flight; None if none.

        One at a time: handing one to the intake may wait, and a commit meanwhile may delete
        or re-arm the rows still queued."""
        while self.heap and self.heap[0][0] <= now:
            fire_at, key = heapq.heappop(self.heap)
            firing = self.rows.get(key)
            if firing is None or firing.fire_at != fire_at:
                continue  # deleted or re-armed since it was queued
            del self.rows[key]
            self.inflight[key] = firing
            return firing
        return None

    async def _reload(self, now: int) -> None:
        self.horizon = now + TIMER_WINDOW_MS
        for r in await self.store.timers_before(self.shard_id, self.horizon):
            firing = TimerFiring(r["timer_key"], int(r["fire_at"]), r["namespace"], r["workflow_id"],
                                 r["run_id"], r["kind"], int(r["ref"]), int(r["attempt"]))
            known = self.rows.get(firing.key)
            if known is None or known.fire_at != firing.fire_at:
                self._add(firing)

    def _arm(self) -> None:
        """Arm the loop handle for the earliest queued row (none: disarm)."""
        at = self.heap[0][0] if self.heap and self._offer is not None else -1
        if self._handle is not None:
            if at == self._armed_at:
                return
            self._handle.cancel()
            self._handle = None
        self._armed_at = at
        if at >= 0:
            loop = asyncio.get_running_loop()
            self._handle = loop.call_at(loop.time() + max(0.0, at / 1000 - time.time()), self._due)

    def _due(self) -> None:
        """The handle's callback: hand every row due by the wall clock to the intake, in this
        loop turn. The loop's clock is not the wall clock: a row not due yet by the wall clock
        (never fired early) re-arms the handle."""
        self._handle, self._armed_at = None, -1
        if self._offer is None or self._overflow:
            return  # the task is handing over what came before
        now = time.time() * 1000
        pending: TimerFiring | None = None  # taken out of the queue, not handed over yet
        try:
            while (firing := self.next_due(now)) is not None:
                pending = firing
                if not self._offer(firing):
                    return
                pending = None
        finally:
            if pending is None:
                self._arm()
            else:
                # No room (or the offer failed): the task hands it over, waiting for room,
                # and fails loudly if the intake does.
                self._overflow.append(pending)
                self.wake.set()

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            if self._handle is not None:
                self._handle.cancel()
                self._handle, self._armed_at = None, -1

    async def _run(self) -> None:
        next_reload = 0
        while True:
            # Milliseconds with their fraction: rounding the clock down to whole ones made every
            # timer wait up to a millisecond more, on top of the event loop's own rounding.
            now = time.time() * 1000
            if now >= next_reload:
                try:
                    await self._reload(int(now))
                except outage.DATABASE_TRANSIENT as exc:
                    await self.backoff.wait(exc)
                    continue
                self.backoff.recovered()
                next_reload = int(now) + TIMER_WINDOW_MS // 2
            while self._overflow:
                await self._fire(self._overflow[0])
                del self._overflow[0]
            while (firing := self.next_due(now)) is not None:
                await self._fire(firing)
            # With an offer, the handle takes rows as they come due and this task sleeps until
            # the next reload (or until woken); without, it sleeps until the earliest row.
            until = next_reload if self._offer is not None or not self.heap else min(next_reload, self.heap[0][0])
            self.wake.clear()
            self._arm()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), max(0.0, until / 1000 - time.time()))
