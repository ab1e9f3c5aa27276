"""Notices to one destination go one request at a time; those made meanwhile go together.

History tells matching (per task partition) and frontends (per address) of each commit's
tasks and replies right after the commit. One request per commit would be one HTTP request
per workflow step under load; so per destination one request is out at a time, and the
notices of the commits made while it is out go together in the next. With nothing out (a
sequential workflow), a notice goes at once. At most ``max_destinations`` destinations have
a request out, and at most ``max_pending`` notices wait per destination; beyond either,
notices are dropped (they are hints: the fetch delivers) and ``dropped`` counts them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

MAX_PENDING = 1_000


class NoticeQueue(Generic[K, V]):
    def __init__(self, send: Callable[[K, list[V]], Awaitable[None]], *, max_destinations: int,
                 max_pending: int = MAX_PENDING) -> None:
        self._send = send
        self._max_destinations = max_destinations
        self._max_pending = max_pending
        self._pending: dict[K, list[V]] = {}
        self.in_flight: dict[K, asyncio.Task[None]] = {}
        self.dropped = 0  # notices not sent: too many destinations out, or too many waiting

    def add(self, destination: K, notices: list[V]) -> None:
        sending = self.in_flight.get(destination)
        if sending is None and len(self.in_flight) >= self._max_destinations:
            self.dropped += len(notices)
            return
        pending = self._pending.setdefault(destination, [])
        room = self._max_pending - len(pending)
        if room < len(notices):
            self.dropped += len(notices) - max(room, 0)
        pending.extend(notices[:max(room, 0)])
        if sending is None:
            self.in_flight[destination] = asyncio.get_running_loop().create_task(self._drain(destination))

    async def _drain(self, destination: K) -> None:
        try:
            while notices := self._pending.pop(destination, None):
                await self._send(destination, notices)
        finally:
            self.in_flight.pop(destination, None)

    async def close(self) -> None:
        tasks = list(self.in_flight.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._pending.clear()
