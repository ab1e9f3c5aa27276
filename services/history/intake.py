"""A shard's intake: the one owner of which ``kadence.requests`` offsets the shard has taken.

Work reaches a shard three ways: records the consumer fetched (:meth:`Intake.feed`),
commands a frontend in this process handed over (:meth:`Intake.offer` once the broker
acknowledged them, :meth:`Intake.offer_early` before), and due timers. They meet in one
inbox; :meth:`Intake.batch` turns what waits there into a batch, dropping every record
below ``consumed`` (taken already, by the other way) and taking a handed command only if
it is the very next offset. So each offset is taken once and in order, whichever way it
came (docs/colocation.md).

A timer firing the engine holds back (:meth:`Intake.hold`: a timer a worker runs ahead, its
grace over while requests the intake knows of wait untaken, decision 0017) comes back
once the intake has taken every offset it knew of; until the hold's re-check time, the
offsets known by then are waited for too, each time those it waited for are taken. Whatever
the backlog, it comes back at its guard (a few graces past its row), so that neither an
offset that never reaches the intake as an item nor a shard that stays behind holds a
timer for longer.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from aiokafka.structs import ConsumerRecord

from kadence_protocol.topics import workflow_key

from .engine import TimerFiring
from .neighbours import HandedCommand

MAX_BATCH = 500
INBOX_SIZE = 64


class Handed(list[HandedCommand]):
    """An inbox item of handed-over commands (as opposed to fetched records), in offset order
    without gaps: commands acknowledged while it waits in the inbox join it (Intake.offer)."""


class Early(NamedTuple):
    """An inbox item: a command taken before the broker acknowledged it (Intake.offer_early)."""

    command: HandedCommand  # its offset is not known yet
    acked: asyncio.Future[Any]  # set to the broker's answer once that is settled


InboxItem = list[ConsumerRecord[bytes, bytes]] | TimerFiring | Early
# A batch: lists of records (fetched or handed over) and timer firings, in the order taken.
Batch = list[Any]


def _nothing() -> None:
    pass


def _skip_nothing(offset: int) -> None:
    pass


class Intake:
    def __init__(self, *, max_batch: int = MAX_BATCH, inbox_size: int = INBOX_SIZE) -> None:
        self.max_batch = max_batch
        self._inbox: asyncio.Queue[InboxItem] = asyncio.Queue(maxsize=inbox_size)
        self._idle = False  # the loop waits for an inbox that is empty
        # The next offset the loop takes: a record below it was taken already, fetched or
        # handed over.
        self.consumed = 0
        # The offset after the last record fed by the consumer.
        self.fed = 0
        # The offset after the last record known to be on the broker (fed, or acknowledged
        # to a frontend in this process and offered), whether taken yet or not.
        self.known = 0
        # Firings held back (hold), in the order held: each with its number, its run's key, the
        # offset it waits for and until when (wall clock, ms) the offsets known since are
        # waited for too.
        self._held: collections.deque[tuple[int, TimerFiring, bytes, int, float]] = collections.deque()
        # The same firings by their guard (wall clock, ms: let go then, whatever they wait
        # for), with their numbers; a number in neither is gone (let go the other way).
        self._guards: list[tuple[float, int, TimerFiring]] = []
        self._holding: set[int] = set()  # the numbers of the firings held
        self._numbers = itertools.count()
        # Per run's key: commands a frontend in this process queued for the broker and has
        # not had answered yet (queued, answered). A key leaves once none is in flight.
        self._in_flight: dict[bytes, int] = {}
        # Per run's key of a firing held: the offset after the last of its commands the
        # broker acknowledged since (the firing waits for it to be taken, too).
        self._held_keys: collections.Counter[bytes] = collections.Counter()
        self._landed: dict[bytes, int] = {}
        # The offset taken before each firing of the batch being run (by key): the records
        # after it in the batch are counted as taken already, but not run yet when it is.
        self._taken_before: dict[str, int] = {}
        # Firings let go since the last batch: they come back to the engine, which asks to
        # hold them again; they are not (or a shard always behind would hold them for ever).
        self._let_go: set[str] = set()
        self.fetched_at = 0.0  # when the loop last took records that came by fetch (monotonic)
        # How to move the consumer's position past records taken by hand-over, and how to
        # ask for the fetch of a partition whose hand-over could not go on (see gate.py).
        self._skip_to: Callable[[int], None] = _skip_nothing
        self._fetch_needed: Callable[[], None] = _nothing
        # The last Handed item put in the inbox, while the loop has not taken it: the next
        # acknowledged command joins it rather than taking an inbox place of its own.
        self._open: Handed | None = None

    def start_at(self, offset: int, *, skip_to: Callable[[int], None] | None = None,
                 fetch_needed: Callable[[], None] | None = None) -> None:
        """Consume from ``offset`` (the stored one), with the consumer's controls."""
        self.consumed = self.fed = self.known = offset
        self._skip_to = skip_to or _skip_nothing
        self._fetch_needed = fetch_needed or _nothing

    # ---- what comes in -----------------------------------------------------------------

    async def feed(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        """Records the consumer fetched; waits while the inbox is full."""
        if records:
            self.fed = max(self.fed, records[-1].offset + 1)
            self.known = max(self.known, self.fed)
        await self._inbox.put(records)

    async def fire(self, firing: TimerFiring) -> None:
        """A timer that is due; waits while the inbox is full."""
        await self._inbox.put(firing)

    def fire_nowait(self, firing: TimerFiring) -> bool:
        """A timer that is due, if the inbox has room (say whether it had)."""
        try:
            self._inbox.put_nowait(firing)
        except asyncio.QueueFull:
            return False
        return True

    def offer(self, command: HandedCommand) -> None:
        """Take a command as soon as the broker has acknowledged it (see HandedCommand).

        It runs only if it is the very next record of the partition when the loop gets to
        it; otherwise (a record from another producer still to be fetched before it, or
        an inbox full of fetched work) its fetched copy takes the usual path. Either way
        each offset is taken once: the loop skips whatever it has taken already.

        A command that follows the last one offered, while that one still waits in the
        inbox, joins its item (up to max_batch): with one inbox place per command, a burst
        filled the inbox's 64 places and most commands took the fetch (a 10,000 burst:
        7,400 handed over, 25,700 fetched, decoded and checked again).
        """
        self.known = max(self.known, command.offset + 1)
        last = self._open
        if last is not None and len(last) < self.max_batch and command.offset == last[-1].offset + 1:
            last.append(command)
            return
        item = Handed([command])
        try:
            self._inbox.put_nowait(item)
        except asyncio.QueueFull:
            self._fetch_needed()
            return
        self._open = item

    def offer_early(self, command: HandedCommand, acked: asyncio.Future[Any]) -> None:
        """Take a command the broker has yet to acknowledge, if the loop has nothing else to do.

        The loop runs it into a batch while the broker is at work (the ~0.3 ms of a produce
        round trip, otherwise idle), then waits for the acknowledgement: it commits only if
        the command's offset is the very next of the partition, as if it had been fetched.
        Otherwise, or when the broker refuses it, the batch is dropped as a failed commit
        would be, and the command takes the usual path (offer, or the fetch).
        """
        if not self._idle or not self._inbox.empty():
            return
        # The shard's own callback, registered before the frontend's wait: the loop resumes
        # with the acknowledgement before the frontend does.
        acknowledged: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        acked.add_done_callback(functools.partial(_relay_outcome, acknowledged))
        self._inbox.put_nowait(Early(command, acknowledged))

    def queued(self, key: bytes) -> None:
        """A frontend in this process queued a command of run ``key`` (its workflow key) for
        the broker: until :meth:`answered`, a firing of that run is held (see hold)."""
        self._in_flight[key] = self._in_flight.get(key, 0) + 1

    def answered(self, key: bytes, offset: int | None) -> None:
        """The broker answered a command :meth:`queued`: acknowledged at ``offset``, or None
        (refused). A firing of the run held meanwhile waits for that offset to be taken too."""
        count = self._in_flight.get(key, 0)
        if count > 1:
            self._in_flight[key] = count - 1
        else:
            self._in_flight.pop(key, None)
        if key not in self._held_keys:
            return
        if offset is not None:
            self._landed[key] = max(self._landed.get(key, 0), offset + 1)  # its record wakes the loop
        elif key not in self._in_flight and self._inbox.empty():
            self._inbox.put_nowait(Handed())  # nothing comes in for a refusal: wake the loop to let the firing go

    def hold(self, firing: TimerFiring, recheck_until_ms: float, guard_ms: float) -> bool:
        """Hold ``firing`` back until the intake has taken every offset it knows of now; False
        (nothing held) when every known offset is taken already (those after the firing in
        its own batch are not: they have not run when it does). Until ``recheck_until_ms``
        (the wall clock), once those are taken, the offsets known by then are waited for too.
        At ``guard_ms`` (the wall clock) it comes back whatever it still waits for.

        For a timer a worker runs ahead whose grace is over (engine.fire_timer): its task may
        be among the requests that reached the broker and wait here, behind a burst, and
        firing the timer first would waste that task and replay the run in the worker; and a
        task sent in time may reach the broker only after the firing was held, behind the
        same burst (decision 0017, stop 26). Past the re-checks, the firing waits only for
        what was there before it, as long as any of those requests waits, up to its guard: a
        known offset that never comes in as an item, or a shard that stays behind, does not
        keep the timer of a worker that went away for longer (stop 27)."""
        taken = self._taken_before.get(firing.key, self.consumed)
        if firing.key in self._let_go or time.time() * 1000 >= guard_ms:
            return False
        key = workflow_key(firing.namespace, firing.workflow_id)
        if self.known <= taken and key not in self._in_flight:
            return False
        number = next(self._numbers)
        self._held.append((number, firing, key, self.known, recheck_until_ms))
        heapq.heappush(self._guards, (guard_ms, number, firing))
        self._holding.add(number)
        self._held_keys[key] += 1
        return True

    def _released(self) -> TimerFiring | None:
        """The first firing held back whose guard passed; else the first held once the offsets
        it waits for are taken and none of its run's commands is in flight, unless more
        offsets are known by then and its re-checks go on (then it waits for those too)."""
        if not self._holding:
            return None
        now_ms = time.time() * 1000
        guards = self._guards
        while guards and (guards[0][1] not in self._holding or guards[0][0] <= now_ms):
            _, number, firing = heapq.heappop(guards)
            if number in self._holding:
                return self._let(number, firing)
        held = self._held
        while held[0][0] not in self._holding:
            held.popleft()  # let go at its guard
        number, firing, key, until, recheck_until = held[0]
        if until > self.consumed or key in self._in_flight or self._landed.get(key, 0) > self.consumed:
            return None
        if self.known > self.consumed and now_ms < recheck_until:
            held[0] = (number, firing, key, self.known, recheck_until)  # more came meanwhile: those too
            return None
        held.popleft()
        return self._let(number, firing)

    def _let(self, number: int, firing: TimerFiring) -> TimerFiring:
        self._holding.discard(number)
        self._let_go.add(firing.key)
        key = workflow_key(firing.namespace, firing.workflow_id)
        if self._held_keys[key] > 1:
            self._held_keys[key] -= 1
        else:
            del self._held_keys[key]
            self._landed.pop(key, None)
        return firing

    def _next_guard_s(self) -> float | None:
        """Seconds until the earliest guard of the firings held (None: none held)."""
        guards = self._guards
        while guards and guards[0][1] not in self._holding:
            heapq.heappop(guards)
        return None if not guards else max(0.001, guards[0][0] / 1000 - time.time())

    def settled(self) -> bool:
        """The loop waits for work and none is queued (a firing held back waits for records:
        the gate still fetches for an idle shard)."""
        return self._idle and self._inbox.empty()

    def empty(self) -> bool:
        return self._inbox.empty()

    def drain(self) -> None:
        """Empty the inbox of a shard that stopped: a consumer waiting to feed it must not
        wait for ever (what it fed is fetched again by the next owner, from the stored offset)."""
        while not self._inbox.empty():
            self._inbox.get_nowait()
        self._open = None
        self._held.clear()  # their rows stay in the table, loaded by the next owner
        self._guards.clear()
        self._holding.clear()
        self._held_keys.clear()
        self._landed.clear()  # (commands in flight stay counted: their answers still come)
        self._taken_before.clear()
        self._let_go.clear()

    # ---- what the loop takes -------------------------------------------------------------

    async def next(self) -> InboxItem:
        """The next inbox item (or firing held back and due again), waiting for one."""
        self._idle = True
        try:
            # A firing held back waits for offsets the intake knows of (they come in as
            # items), or for its guard.
            while True:
                released = self._released()
                if released is not None:
                    return released
                wait = self._next_guard_s()
                if wait is None:
                    item = await self._inbox.get()
                    break
                try:
                    item = await asyncio.wait_for(self._inbox.get(), wait)
                    break
                except TimeoutError:
                    continue
        finally:
            self._idle = False
        if item is self._open:
            self._open = None  # taken: nothing joins it any more
        return item

    def batch(self, item: InboxItem) -> Batch:
        """``item`` and what else waits in the inbox (held firings come back first), up to
        max_batch, less what was taken."""
        batch: Batch = []
        size = 0
        current: Any = item
        self._taken_before.clear()
        while True:
            current = self._untaken(current)
            if isinstance(current, TimerFiring):
                self._taken_before[current.key] = self.consumed
            if current:
                batch.append(current)
                size += len(current) if isinstance(current, list) else 1
            if size >= self.max_batch:
                return batch
            released = self._released()  # a burst's held firings come back together
            if released is not None:
                current = released
                continue
            if self._inbox.empty():
                return batch
            current = self._inbox.get_nowait()
            if current is self._open:
                self._open = None
            if isinstance(current, Early):
                current = Handed()  # only offered to an idle loop; its acknowledged copy follows

    def _untaken(self, item: Any) -> Any:
        """The records of an inbox item that the loop has not taken yet, in offset order."""
        if isinstance(item, Handed):
            # The run of the item's commands from the next offset on (they have no gaps).
            records: list[Any] = [r for r in item if r.offset >= self.consumed]
            if records and records[0].offset != self.consumed:
                records = []
                self._fetch_needed()  # a record of another producer comes first
        elif isinstance(item, list):
            records = item if item and item[0].offset >= self.consumed else [
                r for r in item if r.offset >= self.consumed]
            if records:
                self.fetched_at = time.monotonic()
        else:
            return item  # a timer firing
        if records:
            self.consumed = records[-1].offset + 1
        return records

    def took_early(self, offset: int) -> bool:
        """A command taken early was acknowledged at ``offset``: take that offset if it is the
        next one (and say so); otherwise the usual path takes the command."""
        if offset != self.consumed:
            return False
        self.consumed = offset + 1
        return True

    def after_batch(self) -> None:
        """Commands taken by hand-over need not come through the consumer as well."""
        self._let_go.clear()  # the firings let go have run
        if self.consumed > self.fed:
            self.fed = self.consumed
            self._skip_to(self.consumed)

    def fetch_needed(self) -> None:
        self._fetch_needed()


def _relay_outcome(to: asyncio.Future[Any], acked: asyncio.Future[Any]) -> None:
    """Hand the broker's settled answer to a future of the shard's own (whose wait may time out)."""
    if not to.done():
        to.set_result(acked)
