"""Waits of one fixed length, expired by one timer: ``asyncio.timeout`` without a timer each.

Every command the frontend produces waits at most PRODUCE_TIMEOUT for the broker. With
``asyncio.timeout`` that is a timer armed and cancelled per command (under uvloop a libuv
timer handle made, started, stopped and closed), about 2 % of the server process with
10,000 workflows in flight. All those waits last the same time, so they expire in the order
they began: :class:`SameLengthWaits` keeps them in a queue and arms one timer, for the
oldest wait still open.

The semantics are ``asyncio.timeout``'s: a wait that runs out cancels its task, and the
block raises ``TimeoutError`` in place of that cancellation; a cancellation from elsewhere
passes through unchanged. A wait may run out up to ``slack`` seconds late (timers are not
re-armed more often than that).
"""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType


class _Wait:
    __slots__ = ("cancelling", "deadline", "expired", "open", "task")

    def __init__(self, task: asyncio.Task[object], deadline: float) -> None:
        self.task = task
        self.deadline = deadline
        self.cancelling = task.cancelling()
        self.open = True
        self.expired = False


class _Block:
    """One ``async with`` of :meth:`SameLengthWaits.wait`."""

    __slots__ = ("_wait", "_waits")

    def __init__(self, waits: SameLengthWaits) -> None:
        self._waits = waits
        self._wait: _Wait | None = None

    async def __aenter__(self) -> None:
        self._wait = self._waits._begin()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        wait = self._wait
        assert wait is not None
        wait.open = False
        # As asyncio.timeout: the expiry's cancellation is taken back however the block ended
        # (it may have caught it), and only turned into TimeoutError when it ended the block.
        if wait.expired and wait.task.uncancel() <= wait.cancelling and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc


class SameLengthWaits:
    """``async with waits.wait():`` bounds the block to ``seconds``, as
    ``asyncio.timeout(seconds)`` would, sharing one timer among all open waits."""

    def __init__(self, seconds: float, *, slack: float = 0.05) -> None:
        self.seconds = seconds
        self._slack = slack
        self._queue: deque[_Wait] = deque()  # in the order they began, so by deadline
        self._timer: asyncio.TimerHandle | None = None

    def wait(self) -> _Block:
        return _Block(self)

    def __len__(self) -> int:
        """Waits queued (open, or closed and not yet dropped)."""
        return len(self._queue)

    def _begin(self) -> _Wait:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("SameLengthWaits.wait() must be used inside a task")
        loop = task.get_loop()
        queue = self._queue
        while queue and not queue[0].open:  # closed waits ahead of this one need no timer
            queue.popleft()
        wait = _Wait(task, loop.time() + self.seconds)
        queue.append(wait)
        if self._timer is None:
            self._timer = loop.call_at(wait.deadline, self._expire)
        return wait

    def _expire(self) -> None:
        self._timer = None
        queue = self._queue
        if not queue:
            return
        loop = queue[0].task.get_loop()
        now = loop.time()
        while queue and (not queue[0].open or queue[0].deadline <= now):
            wait = queue.popleft()
            if wait.open and not wait.task.done():
                wait.expired = True
                wait.task.cancel()
        if queue:
            self._timer = loop.call_at(max(queue[0].deadline, now + self._slack), self._expire)

    def close(self) -> None:
        """Stop the timer (the waits still open are not expired)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
