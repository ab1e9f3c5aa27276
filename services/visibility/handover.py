"""Records of ``kadence.history`` that this process's outbox relays published, handed to the
in-process visibility projection (``consumer.py``) with the offset the broker gave each.

In ``kadence dev`` visibility used to fetch back, decode and fold every record the relays
beside it had just published (several percent of the server process's CPU, and a fetch
the development broker answers by listing the partition). The relay tells a
:class:`Handover` what it published once the broker has acknowledged it (the relay's
notices, services/history/notices.py), so the record at that offset is the one handed.
The consumer applies a partition's handed records only as a run contiguous from its own
position (the stored offset, or what it applied since), commits the offset after the write
as for a fetch, and fetches whatever was not handed (another process's records, records
from before it started, records dropped here). A record handed is a copy in memory: a crash
loses it, and the consumer fetches it again from the offset stored in Kafka.

Bounded: at most ``max_pending`` records wait here; beyond, records are dropped (counted)
and the consumer fetches them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from services.common.kafka import HISTORY, Published, Record
from services.common.reply_notices import NO_UPDATES, TaskUpdates

MAX_PENDING = 200_000


class Handover:
    """Per partition of ``kadence.history``: the records handed and not yet taken, by offset."""

    def __init__(self, max_pending: int = MAX_PENDING) -> None:
        self._max = max_pending
        self._pending: dict[int, dict[int, bytes]] = {}
        self._count = 0
        self._ends: dict[int, int] = {}  # per partition: past the highest offset handed
        self.handed = 0
        self.dropped = 0  # records not kept (too many waiting): fetched instead

    # The relay's side (services/history/notices.py TaskNotices).
    def published(self, records: Sequence[Record], where: Sequence[Published],
                  updates: TaskUpdates = NO_UPDATES) -> None:
        pending, ends = self._pending, self._ends
        for (topic, _, value, _), at in zip(records, where, strict=True):
            if topic != HISTORY:
                continue
            partition, offset = at.partition, at.offset
            if offset >= ends.get(partition, 0):
                ends[partition] = offset + 1
            if self._count >= self._max:
                self.dropped += 1
                continue
            waiting = pending.get(partition)
            if waiting is None:
                waiting = pending[partition] = {}
            if offset not in waiting:
                waiting[offset] = value
                self._count += 1
                self.handed += 1

    async def close(self) -> None:
        """Nothing to release: it holds no connection or task, only records in memory (the
        relay closes its listeners together, and the others do hold connections)."""

    # The consumer's side.
    def waiting(self, partition: int) -> bool:
        return bool(self._pending.get(partition))

    def has(self, partition: int, offset: int) -> bool:
        """Whether the record at ``offset`` is waiting here."""
        return offset in self._pending.get(partition, ())

    def take(self, partition: int, position: int, limit: int | None = None) -> list[bytes]:
        """The records handed from ``position`` on without a hole (at most ``limit``), taken out."""
        waiting = self._pending.get(partition)
        if not waiting:
            return []
        run: list[bytes] = []
        while position in waiting and len(run) != limit:
            run.append(waiting.pop(position))
            position += 1
        self._count -= len(run)
        return run

    def forget_below(self, partition: int, position: int) -> None:
        """Drop what the consumer has fetched and applied already."""
        waiting = self._pending.get(partition)
        if waiting:
            stale = [offset for offset in waiting if offset < position]
            for offset in stale:
                del waiting[offset]
            self._count -= len(stale)

    def keep_only(self, partitions: Iterable[int]) -> None:
        """Drop what waits for partitions another consumer of the group projects."""
        keep = set(partitions)
        for partition in [p for p in self._pending if p not in keep]:
            self._count -= len(self._pending.pop(partition))
            self._ends.pop(partition, None)

    def end(self, partition: int) -> int:
        """Past the highest offset handed for ``partition`` (0: none)."""
        return self._ends.get(partition, 0)
