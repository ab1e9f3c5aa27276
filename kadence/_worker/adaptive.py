"""How many tasks a worker asks for per poll and runs at once, adapted to the backlog it sees.

Users do not tune workers, so the limits a poller works with are not fixed numbers: they
start small, grow fast while the polls come back full (a full answer means more tasks wait at
the server) and shrink again when the polls come back empty (the queue is idle). The
``max_*`` settings of :class:`kadence.Worker` are the ceilings they grow to.

The poller asks a :class:`TaskLimits` how much to poll for and how many tasks may run at
once, and tells it what each poll brought; :class:`AdaptiveLimits` is the default,
:class:`FixedLimits` keeps both numbers where they were set.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["GROWTH", "AdaptiveLimits", "FixedLimits", "TaskLimits"]


class TaskLimits(Protocol):
    """What a poller asks before each poll and tells after it (shared by one worker's pollers
    of one kind of task)."""

    def poll_size(self) -> int:
        """The most tasks the next poll may ask for (at least 1)."""
        ...

    def concurrency(self) -> int:
        """How many tasks may run at once (at least 1)."""
        ...

    def observed(self, asked: int, got: int, busy: int) -> None:
        """A poll that asked for ``asked`` tasks brought ``got``; ``busy`` slots are now taken
        (the tasks running and the ones just brought)."""
        ...


class FixedLimits:
    """Both numbers fixed: what a worker did before the limits adapted."""

    def __init__(self, poll_size: int, concurrency: int) -> None:
        if poll_size < 1 or concurrency < 1:
            raise ValueError("a poll size and a concurrency limit must be at least 1")
        self._poll_size = poll_size
        self._concurrency = concurrency

    def poll_size(self) -> int:
        return self._poll_size

    def concurrency(self) -> int:
        return self._concurrency

    def observed(self, asked: int, got: int, busy: int) -> None:
        pass


#: How much a full answer multiplies the limits by. Four, not two: from the floors (10 per
#: poll, 50 at once) to the SDK's ceilings (100, 1,000) takes two full answers and three,
#: not four and five, and each of those is a poll's round trip, which a burst's tasks wait
#: through while the server is at its busiest (docs/sdk.md, "How a worker's limits grow").
GROWTH = 4


class AdaptiveLimits:
    """Limits that follow the backlog: multiplied by :data:`GROWTH` while polls come back
    full, halved (never below what is running, nor below the floors) while they come back
    empty.

    A full answer (as many tasks as asked for) is the only sign of a backlog the worker
    gets: the server hands out what is queued, up to the number asked for. So a worker
    that keeps getting full answers asks for more per poll (fewer round trips per task),
    and when it also has no slot left it is allowed to run more at once. An empty answer
    (the long poll waited out its time) means the queue is idle: the limits fall back, so
    a burst next time starts from small numbers and grows again within a few polls.
    Growth is steeper than the fall: a poll too large for the backlog costs nothing (the
    server answers with what it has), a burst's tasks waiting for the limits to catch up
    cost a round trip each.
    """

    def __init__(self, *, max_poll_size: int, max_concurrency: int,
                 min_poll_size: int = 10, min_concurrency: int = 50) -> None:
        if max_poll_size < 1 or max_concurrency < 1:
            raise ValueError("a poll size and a concurrency limit must be at least 1")
        self.max_poll_size = max_poll_size
        self.max_concurrency = max_concurrency
        self.min_poll_size = max(1, min(min_poll_size, max_poll_size))
        self.min_concurrency = max(1, min(min_concurrency, max_concurrency))
        self._poll_size = self.min_poll_size
        self._concurrency = self.min_concurrency

    def poll_size(self) -> int:
        return self._poll_size

    def concurrency(self) -> int:
        return self._concurrency

    def observed(self, asked: int, got: int, busy: int) -> None:
        if asked > 0 and got >= asked:  # a backlog: more tasks wait than were asked for
            self._poll_size = min(self.max_poll_size, self._poll_size * GROWTH)
            # Out of slots (or the next poll would be cut short by them): run more at once.
            if busy + self._poll_size > self._concurrency:
                self._concurrency = min(self.max_concurrency, self._concurrency * GROWTH)
        elif got == 0:  # idle: fall back towards the floors, never below what is running
            self._poll_size = max(self.min_poll_size, self._poll_size // 2)
            self._concurrency = max(self.min_concurrency, busy, self._concurrency // 2)
        # A short answer (some, fewer than asked) is the queue drained at this size: keep it.
