"""Who polled a task queue lately: each poller's identity and the time of its last poll.

A ``RecentPollers`` belongs to one in-memory task queue (one namespace, name and kind) of
the matching instance that owns its partition. ``kadence task-queue describe`` and the web
UI show it to answer "is any worker polling this queue, and which?". Entries older than
``POLLER_TTL_MS`` are forgotten (a worker that stopped polling is gone), and at most
``MAX_POLLERS`` are kept (the least recent go first), so a queue polled under ever-new
identities costs bounded memory. Nothing here does I/O.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from services.common.matching.stats import PollerSeen

POLLER_TTL_MS = 5 * 60 * 1000
MAX_POLLERS = 1000
UNNAMED = "(no identity)"


def now_ms() -> int:
    return int(time.time() * 1000)


class RecentPollers:
    def __init__(self, *, ttl_ms: int = POLLER_TTL_MS, limit: int = MAX_POLLERS,
                 clock: Callable[[], int] = now_ms) -> None:
        self._ttl_ms = ttl_ms
        self._limit = limit
        self._clock = clock
        self._seen: OrderedDict[str, int] = OrderedDict()  # identity -> last poll, least recent first

    def saw(self, identity: str) -> None:
        """A poll from ``identity`` arrived now."""
        name = identity or UNNAMED
        self._seen[name] = self._clock()
        self._seen.move_to_end(name)
        while len(self._seen) > self._limit:
            self._seen.popitem(last=False)

    def recent(self) -> tuple[PollerSeen, ...]:
        """The pollers seen within the TTL, most recent first."""
        horizon = self._clock() - self._ttl_ms
        while self._seen:
            name, at = next(iter(self._seen.items()))
            if at >= horizon:
                break
            del self._seen[name]
        return tuple(PollerSeen(name, at) for name, at in reversed(self._seen.items()))

    @property
    def last_poll_ms(self) -> int | None:
        recent = self.recent()
        return recent[0].last_poll_ms if recent else None
