"""Task notices from a shard to matching (services/common/matching/notices.py).

Between processes a task reaches matching through ``kadence.tasks``, and each hop would
cost matching's fetch wait. Right after a commit that wrote tasks, the shard tells the
matching owner of each task partition which tasks go there (the records, UNPUBLISHED: the
outbox relay publishes them meanwhile) over matching's internal HTTP API, so a poll already
waiting gets its task without waiting for the relay's produce round trip and the fetch.
The record still travels through the broker and the consumer still ingests it; a notice
is sent only after the commit (the outbox rule: nothing leaves before it), as one process
hands tasks over, and only ever shortens a wait. Sending never blocks the shard: at most
MAX_IN_FLIGHT requests are out, and notices past that, or that fail, are dropped
(counted). ``KADENCE_TASK_NOTICES=0`` turns them off.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from services.common.command_notices import CommandNotice
from services.common.kafka import REQUESTS, TASKS, Published, Record
from services.common.matching.client import MatchingClient
from services.common.matching.errors import MatchingError
from services.common.matching.notices import UNPUBLISHED, TaskNotice
from services.common.notice_queue import NoticeQueue
from services.common.reply_notices import NO_UPDATES, TaskUpdates

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 64  # partitions with a notice request out; beyond, notices are dropped (they are hints)
NOTICE_TIMEOUT_S = 1.0  # a notice later than this is worth nothing: the fetch has the task by then


class CommitNotices(Protocol):
    """Told of the records of each commit, right after it and before the relay publishes them
    (task notices here, reply notices in services/common/reply_notices.py); ``updates``: per
    task record, its run's update requests as of the commit."""

    def committed(self, records: Sequence[Record], updates: TaskUpdates = NO_UPDATES) -> None: ...

    def covers(self, topic: str, key: bytes | None) -> bool:
        """Whether a record of ``topic`` keyed ``key`` is told (its publication is then only
        the fallback, which the relay may gather with others)."""
        ...

    async def close(self) -> None: ...


class BothCommitNotices:
    """Tell two of them: task notices and reply notices."""

    def __init__(self, first: CommitNotices, second: CommitNotices) -> None:
        self.first, self.second = first, second

    def committed(self, records: Sequence[Record], updates: TaskUpdates = NO_UPDATES) -> None:
        self.first.committed(records, updates)
        self.second.committed(records, updates)

    def covers(self, topic: str, key: bytes | None) -> bool:
        return self.first.covers(topic, key) or self.second.covers(topic, key)

    async def close(self) -> None:
        await self.first.close()
        await self.second.close()


class NoNotices:
    """Nobody is told: matching learns of tasks by its fetch alone (co-located, or notices
    off); also the relay's "nothing to tell" of what it published (reply_notices.Notices)."""

    def committed(self, records: Sequence[Record], updates: TaskUpdates = NO_UPDATES) -> None:
        pass

    def covers(self, topic: str, key: bytes | None) -> bool:
        return False

    def published(self, records: Sequence[Record], where: Sequence[Published],
                  updates: TaskUpdates = NO_UPDATES) -> None:
        pass

    async def close(self) -> None:
        pass


NO_NOTICES = NoNotices()


@dataclass
class NoticeCounts:
    sent: int = 0  # requests answered by matching
    failed: int = 0  # requests that failed (no owner known, owner down, timeout)
    dropped: int = 0  # notices not sent: too many waiting or out already


class MatchingNotices:
    """Notices over matching's internal HTTP API: per task partition one request out at a time,
    the notices of the commits made meanwhile together in the next (notice_queue.py)."""

    def __init__(self, client: MatchingClient, *, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self._client = client
        self._queue: NoticeQueue[int, TaskNotice] = NoticeQueue(self._send, max_destinations=max_in_flight)
        self.counts = NoticeCounts()

    def covers(self, topic: str, key: bytes | None) -> bool:
        return topic == TASKS

    def committed(self, records: Sequence[Record], updates: TaskUpdates = NO_UPDATES) -> None:
        by_partition: dict[int, list[TaskNotice]] = {}
        for topic, key, value, headers in records:
            if topic == TASKS:
                waiting = updates.get(value)
                by_partition.setdefault(self._client.partition_of_key(key), []).append(TaskNotice(
                    UNPUBLISHED, value, tuple(headers), None if waiting is None else [dict(u) for u in waiting]))
        for partition, notices in by_partition.items():
            self._queue.add(partition, notices)
        self.counts.dropped = self._queue.dropped

    async def _send(self, partition: int, notices: list[TaskNotice]) -> None:
        try:
            await self._client.notify_tasks(partition, notices, NOTICE_TIMEOUT_S)
        except MatchingError as exc:
            # A hint lost: the consumer's fetch delivers the tasks.
            self.counts.failed += 1
            log.debug("task notice for partition %d not taken: %s", partition, exc)
            return
        self.counts.sent += 1

    async def close(self) -> None:
        await self._queue.close()
        await self._client.close()


# Offers a partition's commands to its shard if it runs in this process (HistoryService.offer_own).
OfferCommands = Callable[[int, list[CommandNotice]], None]


class OwnCommands:
    """Records the relay published to ``kadence.requests`` (a child workflow's start, a signal
    or cancellation to another workflow, a child's outcome to its parent), offered to the
    shard of their partition when it runs in this process, as a frontend's command notice is
    (``Intake.offer``: taken only at the very next offset, otherwise left to the fetch).

    Between processes history fetches ``kadence.requests`` with the longer wait of a noticed
    hop (services/common/fetch_waits.py); without this, such a command would wait for it.
    """

    def __init__(self, offer: OfferCommands) -> None:
        self._offer = offer

    def published(self, records: Sequence[Record], where: Sequence[Published],
                  updates: TaskUpdates = NO_UPDATES) -> None:
        by_partition: dict[int, list[CommandNotice]] = {}
        for (topic, key, value, headers), at in zip(records, where, strict=True):
            if topic == REQUESTS:
                by_partition.setdefault(at.partition, []).append(CommandNotice(at.offset, key, value, tuple(headers)))
        for partition, notices in by_partition.items():
            self._offer(partition, notices)

    async def close(self) -> None:
        pass
