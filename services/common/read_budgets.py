"""Shares of the frontend's PostgreSQL pool by kind of read, so that one kind cannot take
every connection.

Under mass replays (a worker restarted with thousands of runs open, each replaying its
history) the history pages asked at once outnumber the pool many times; taking connections
first come, first served, a describe, a result wait or a command's read of another
namespace queued behind all of them and gave up with a 503. Here each bounded read
(read_bound.py) first takes a slot of its kind, then one of the reads' share of the pool:

- a kind (history pages, result waits, other lookups) holds at most the reads' share less
  one, so a flood of one always leaves the others a connection;
- every read together holds at most the pool less a reserve (a quarter, at least one when
  the pool has two), left to what never waits here: commands' reads, matching's and
  visibility's queries on a pool they share, writes;
- a slot waits within the read's own bound, then gives up naming the share that was full;
- the waiters of a kind are served in turn by namespace, and the reads' share in turn by
  kind: a namespace asking for a thousand pages and one asking for one each get the next
  free slot alternately.

Which kind a read is comes from the call it serves (:func:`reading_as`, set by the
frontend's routes); a read outside any call counts as a lookup.

Metrics (services/common/telemetry.py): the reads that waited for a slot and those that gave
up, by kind and by the share that was full, counted on the slow path only; the slots in use
and the reads waiting, by kind, read by the exporter from :meth:`ReadBudgets.gauges`.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
from collections import OrderedDict, deque
from collections.abc import Hashable
from dataclasses import dataclass

from services.common import telemetry


class ReadKind(enum.Enum):
    """What a bounded read serves; the value names its share in a 503's ``limit``."""

    HISTORY = "history_reads"  # history pages, a polled workflow task's events: replays
    RESULTS = "result_reads"  # result waits
    LOOKUPS = "lookup_reads"  # describe, list, count, task queues, namespaces, the web UI
    COMMANDS = "command_reads"  # a command's own reads (a signal's run, a query's): never held back

    @property
    def words(self) -> str:
        """As a message says it: "history reads"."""
        return self.value.replace("_", " ")


@dataclass(frozen=True)
class Reading:
    kind: ReadKind
    namespace: str = ""


_OUTSIDE_CALLS = Reading(ReadKind.LOOKUPS)
_READING: contextvars.ContextVar[Reading | None] = contextvars.ContextVar("kadence_reading", default=None)


def reading_as(kind: ReadKind, namespace: str = "") -> contextvars.Token[Reading | None]:
    """The reads made from here on in this context serve ``kind`` for ``namespace``; give the
    token to :func:`done_reading` when the call ends."""
    return _READING.set(Reading(kind, namespace))


def done_reading(token: contextvars.Token[Reading | None]) -> None:
    _READING.reset(token)


def current_reading() -> Reading:
    return _READING.get() or _OUTSIDE_CALLS


class BudgetExhausted(TimeoutError):
    """No slot of ``kind`` within the read's bound; the message says which share was full."""

    def __init__(self, kind: ReadKind, message: str, slots: int) -> None:
        super().__init__(message)
        self.kind = kind
        self.slots = slots


class FairSlots:
    """``capacity`` slots, the waiters served in turn by key: each key's waiters in order, the
    keys in rotation. An ``asyncio.Semaphore`` whose waiters take turns by key."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("at least one slot")
        self.capacity = capacity
        self._free = capacity
        self._waiting: OrderedDict[Hashable, deque[asyncio.Future[None]]] = OrderedDict()
        # Kept as a count, not summed over _waiting: the metrics' exporter reads it from its
        # own thread, while the loop changes the queues.
        self._queued = 0

    @property
    def in_use(self) -> int:
        return self.capacity - self._free

    @property
    def waiting(self) -> int:
        return self._queued

    def take_now(self) -> bool:
        """A free slot taken if there is one and nobody waits for it."""
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return True
        return False

    async def take(self, key: Hashable, timeout: float) -> None:
        """A slot for ``key``, waiting at most ``timeout`` seconds (TimeoutError)."""
        if self.take_now():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, deque()).append(fut)
        self._queued += 1
        try:
            async with asyncio.timeout(max(timeout, 0.0)):
                await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.give()  # handed a slot as the wait ended: it goes to the next waiter
            else:
                self._forget(key, fut)
            raise

    def give(self) -> None:
        """A slot back: to the first waiter of the next key in turn, or free."""
        while self._waiting:
            key, queue = next(iter(self._waiting.items()))
            fut = queue.popleft()
            self._queued -= 1
            if queue:
                self._waiting.move_to_end(key)  # its next waiter comes after the other keys'
            else:
                del self._waiting[key]
            if not fut.done():
                fut.set_result(None)
                return
        self._free += 1

    def _forget(self, key: Hashable, fut: asyncio.Future[None]) -> None:
        queue = self._waiting.get(key)
        if queue is None:
            return
        try:
            queue.remove(fut)
        except ValueError:
            return
        self._queued -= 1
        if not queue:
            del self._waiting[key]


def reads_share(pool_size: int) -> int:
    """How many of ``pool_size`` connections the bounded reads may hold together."""
    reserve = min(pool_size - 1, max(1, pool_size // 4))
    return max(1, pool_size - reserve)


class ReadBudgets:
    """The slots of a pool of ``pool_size`` connections (module docstring)."""

    def __init__(self, pool_size: int) -> None:
        self.pool_size = pool_size
        self.share = reads_share(pool_size)
        self.per_kind = max(1, self.share - 1)
        self._all = FairSlots(self.share)
        self._kinds: dict[ReadKind, FairSlots] = {
            kind: FairSlots(self.per_kind) for kind in ReadKind if kind is not ReadKind.COMMANDS}
        telemetry.register_read_budgets(self)  # held weakly: gone with the frontend

    async def take(self, reading: Reading, timeout: float) -> bool:
        """A slot for ``reading`` within ``timeout`` seconds (:class:`BudgetExhausted`); False:
        a command's read, which takes none (nothing to give back)."""
        kind_slots = self._kinds.get(reading.kind)
        if kind_slots is None:
            return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        waited = not kind_slots.take_now()
        if waited:  # counted once a read, on the slow path only
            _count_wait(reading.kind)
            try:
                await kind_slots.take(reading.namespace, timeout)
            except TimeoutError:
                _count_give_up(reading.kind, reading.kind.value)
                raise BudgetExhausted(reading.kind, f"{reading.kind.words} may hold {self.per_kind} of the"
                                      f" frontend's {self.pool_size} connections, all in use",
                                      self.per_kind) from None
        if self._all.take_now():
            return True
        if not waited:
            _count_wait(reading.kind)
        try:
            await self._all.take(reading.kind, deadline - loop.time())
        except BaseException as exc:
            kind_slots.give()
            if isinstance(exc, TimeoutError):
                _count_give_up(reading.kind, ALL_READS)
                raise BudgetExhausted(reading.kind, f"reads may hold {self.share} of the frontend's {self.pool_size}"
                                      " connections, all in use", self.share) from None
            raise
        return True

    def give(self, reading: Reading) -> None:
        self._all.give()
        self._kinds[reading.kind].give()

    def in_use(self, kind: ReadKind) -> int:
        slots = self._kinds.get(kind)
        return 0 if slots is None else slots.in_use

    def gauges(self) -> list[tuple[str, int, int]]:
        """Each share's slots in use and reads waiting for one, by its name (a kind's, or
        ALL_READS): what the metrics' gauges read."""
        shares = [(kind.value, slots) for kind, slots in self._kinds.items()]
        return [(name, slots.in_use, slots.waiting) for name, slots in (*shares, (ALL_READS, self._all))]


# The reads' share (all kinds together), as the metrics name it.
ALL_READS = "all_reads"


def _count_wait(kind: ReadKind) -> None:
    instruments = telemetry.metrics()
    if instruments is not None:
        instruments.reads_waited.add(1, {"kadence.read_kind": kind.value})


def _count_give_up(kind: ReadKind, share: str) -> None:
    instruments = telemetry.metrics()
    if instruments is not None:
        instruments.reads_gave_up.add(1, {"kadence.read_kind": kind.value, "kadence.read_share": share})
