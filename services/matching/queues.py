"""In-memory task queues of the partitions this matching instance owns.

A ``TaskQueue`` holds the pollers waiting on one (namespace, task_queue, kind), in
arrival order so dispatch is fair, the query tasks not yet taken, the tasks history
in this process handed over while no poll waited (``ready``), and the number of rows
the queue has in the PostgreSQL backlog (so an empty backlog costs no query).
Nothing here does I/O; the service decides when to touch the database.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from services.common.matching.tasks import MatchedTask

from .pollers import RecentPollers


@dataclass(frozen=True)
class QueueKey:
    namespace: str
    task_queue: str
    kind: str


class CommittedTask(Protocol):
    """A task that history in this process has just committed for matching here."""

    @property
    def name(self) -> str: ...  # its record type: WorkflowTask or ActivityTask

    @property
    def record(self) -> dict[str, Any]: ...  # the record, as it would be encoded

    @property
    def events(self) -> Sequence[Mapping[str, Any]] | None: ...  # a workflow task's carried events, decoded

    @property
    def traceparent(self) -> str | None: ...  # its dispatch span, when traced (colocation.TracedTasks)

    @property
    def updates(self) -> Sequence[Mapping[str, Any]] | None: ...  # a workflow task's update requests at commit


class Poller:
    """One waiting poll; its future receives the tasks, or [] meaning "look again"."""

    __slots__ = ("future", "max_tasks")

    def __init__(self, max_tasks: int) -> None:
        self.future: asyncio.Future[list[MatchedTask]] = asyncio.get_running_loop().create_future()
        self.max_tasks = max_tasks


class TaskQueue:
    def __init__(self, key: QueueKey, partition: int, backlog: int = 0) -> None:
        self.key = key
        self.partition = partition
        self.backlog = backlog
        self.pollers: deque[Poller] = deque()
        self.queries: deque[MatchedTask] = deque()
        # Committed tasks handed over in process that no poll was waiting for: the next
        # polls take them from memory (they were not published; see MatchingService.hand_over).
        self.ready: deque[MatchedTask] = deque()
        # Tasks history noticed (published, not yet fetched here) while no poll waited: a poll
        # that comes before the fetch takes them (MatchingService.hold_noticed); the fetched
        # copy of one still here takes the usual way instead.
        self.noticed: OrderedDict[str, MatchedTask] = OrderedDict()
        self.seen = RecentPollers()  # who polled lately (describe shows it)

    def add_poller(self, max_tasks: int) -> Poller:
        poller = Poller(max_tasks)
        self.pollers.append(poller)
        return poller

    def remove_poller(self, poller: Poller) -> None:
        try:
            self.pollers.remove(poller)
        except ValueError:
            pass  # already taken by a hand-over

    def _next_poller(self) -> Poller | None:
        while self.pollers:
            poller = self.pollers.popleft()
            if not poller.future.done():
                return poller
        return None

    def offer(self, task: MatchedTask) -> bool:
        """Hand ``task`` to the longest-waiting poller; False when nobody waits."""
        return self.offer_many([task]) == 1

    def offer_many(self, tasks: Sequence[MatchedTask]) -> int:
        """Hand out ``tasks`` in order, each waiting poller taking as many as it asked
        for, longest-waiting first; return how many were handed out (a prefix)."""
        given = 0
        while given < len(tasks):
            poller = self._next_poller()
            if poller is None:
                break
            take = tasks[given:given + poller.max_tasks]
            poller.future.set_result(list(take))
            given += len(take)
        return given

    def take_ready(self, limit: int) -> list[MatchedTask]:
        return _take(self.ready, limit)

    def take_noticed(self, limit: int) -> list[MatchedTask]:
        taken: list[MatchedTask] = []
        while self.noticed and len(taken) < limit:
            taken.append(self.noticed.popitem(last=False)[1])
        return taken

    def wake(self, count: int) -> None:
        """Tell up to ``count`` waiting pollers to look at the backlog again."""
        for _ in range(count):
            poller = self._next_poller()
            if poller is None:
                return
            poller.future.set_result([])

    def wake_all(self) -> None:
        self.wake(len(self.pollers))

    def has_pollers(self) -> bool:
        return any(not p.future.done() for p in self.pollers)

    def take_queries(self, limit: int) -> list[MatchedTask]:
        return _take(self.queries, limit)


def _take(waiting: deque[MatchedTask], limit: int) -> list[MatchedTask]:
    """Up to ``limit`` tasks from the front of ``waiting``."""
    taken: list[MatchedTask] = []
    while waiting and len(taken) < limit:
        taken.append(waiting.popleft())
    return taken


class RecentTasks:
    """Task ids handed out in the last few seconds.

    The outbox relay publishes at least once, so the same task can arrive twice in
    quick succession; the second copy is dropped. The window is short on purpose:
    history re-dispatches a task that no worker started (after about 10 s) under the
    same task id, and that copy must be delivered.
    """

    def __init__(self, window_seconds: float = 5.0, capacity: int = 100_000) -> None:
        self._ids: OrderedDict[str, float] = OrderedDict()
        self._window = window_seconds
        self._capacity = capacity

    def __contains__(self, task_id: object) -> bool:
        at = self._ids.get(task_id) if isinstance(task_id, str) else None
        return at is not None and time.monotonic() - at < self._window

    def add(self, task_id: str) -> None:
        now = time.monotonic()
        self._ids[task_id] = now
        self._ids.move_to_end(task_id)
        while self._ids and (len(self._ids) > self._capacity or now - next(iter(self._ids.values())) >= self._window):
            self._ids.popitem(last=False)

    def discard(self, task_id: str) -> None:
        self._ids.pop(task_id, None)
