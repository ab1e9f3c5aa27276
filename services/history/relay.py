"""A shard's outbox relay: publishes what each commit wrote to the outbox, after the commit.

Every batch's messages are numbered under one outbox id (:meth:`OutboxRelay.number`)
and written by the commit; once committed they are queued here (:meth:`OutboxRelay.committed`)
and published in that order. Published rows are deleted at most every OUTBOX_CLEANUP_S under
load and as soon as the relay falls idle: a crash in between publishes them again, which
consumers take as the duplicates they already expect. A new owner publishes what the
previous one left (:meth:`OutboxRelay.recover`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer

from services.common import kafka, outage
from services.common.reply_notices import NO_UPDATES, Notices, TaskUpdates

from .builder import Mutation, OutboxMessage
from .notices import NO_NOTICES, CommitNotices
from .store import OutboxRow
from .summary import waiting_updates

OUTBOX_CLEANUP_S = 0.2
# Records nobody waits for (the audit log's, and tasks and replies told at the commit) wait
# this long for more to go with them.
AUDIT_GATHER_S = 0.010


class OutboxStore(Protocol):
    """What the relay asks of the store (HistoryStore)."""

    async def pending_outbox(self, shard_id: int) -> list[OutboxRow]: ...

    async def next_outbox_id(self, shard_id: int) -> int: ...

    async def delete_outbox(self, shard_id: int, up_to: int, range_id: int) -> None: ...


class OutboxRelay:
    def __init__(self, shard_id: int, store: OutboxStore, producer: AIOKafkaProducer,
                 backoff: outage.Backoff, notices: Notices = NO_NOTICES,
                 at_commit: CommitNotices = NO_NOTICES) -> None:
        self.shard_id = shard_id
        self.notices = notices  # told what was published, once the broker has it (reply_notices.py)
        self.at_commit = at_commit  # told of each commit's tasks and replies, before they are published
        self.store = store
        self.producer = producer
        self.backoff = backoff
        self._queue: asyncio.Queue[list[OutboxRow]] = asyncio.Queue()
        self._urgent = asyncio.Event()  # the queue holds records a service or worker waits for
        self.next_outbox_id = 1
        self.range_id = 0  # the shard's fence, set at acquisition (Shard.acquire)
        self.backlog = 0  # rows committed and not yet taken for publication (a gauge)

    async def recover(self) -> int:
        """On acquisition: queue what was committed and not published; return how many rows."""
        pending = await self.store.pending_outbox(self.shard_id)
        self.next_outbox_id = await self.store.next_outbox_id(self.shard_id)
        if pending:
            self._notice(pending, NO_UPDATES)  # committed by the previous owner: its commit's are not known
            self._put(pending)
        return len(pending)

    def number(self, mutations: Sequence[Mutation], replies: Sequence[OutboxMessage]) -> list[OutboxRow]:
        """The batch's messages in publication order, all under the batch's outbox id."""
        rows = [(self.next_outbox_id, m) for mut in mutations for m in mut.outbox]
        rows.extend((self.next_outbox_id, m) for m in replies)
        if rows:
            self.next_outbox_id += 1
        return rows

    def not_committed(self, outbox: list[OutboxRow]) -> None:
        """The commit of ``outbox`` (as numbered) wrote nothing: its id is free again."""
        if outbox:
            self.next_outbox_id = outbox[0][0]

    def committed(self, outbox: list[OutboxRow], mutations: Sequence[Mutation] = ()) -> None:
        """``outbox`` is committed: tell matching and frontends elsewhere of its tasks and
        replies now, and publish it. ``mutations`` (the batch's) give each task's notice the
        update requests of its run as of this commit (summary.waiting_updates), so that the
        frontend handing a noticed workflow task to a waiting poll need not read them."""
        if outbox:
            if self.at_commit is not NO_NOTICES:
                updates: dict[bytes, Any] = {}
                for m in mutations:
                    tasks = [msg.value for msg in m.outbox if msg.topic == kafka.TASKS]
                    if tasks:
                        updates.update(dict.fromkeys(tasks, waiting_updates(m.state)))
                self._notice(outbox, updates)
            self._put(outbox)
            if not self._may_gather(outbox):
                self._urgent.set()

    def _notice(self, rows: list[OutboxRow], updates: TaskUpdates) -> None:
        # Right after the commit, not after the publication: the produce round trip is then
        # off the hop (the record follows, and its consumer takes it as a copy).
        if self.at_commit is not NO_NOTICES:
            told = [m for _, m in rows if self.at_commit.covers(m.topic, m.key)]
            if told:
                self.at_commit.committed(told, updates)

    def _may_gather(self, rows: list[OutboxRow]) -> bool:
        """Nobody waits for these records' publication: the audit log's, and tasks and replies
        told at the commit (their publication is the fallback of a lost notice)."""
        return all(m.topic == kafka.HISTORY or self.at_commit.covers(m.topic, m.key) for _, m in rows)

    def _put(self, rows: list[OutboxRow]) -> None:
        self._queue.put_nowait(rows)
        self.backlog += len(rows)

    def _take(self) -> list[OutboxRow]:
        rows = self._queue.get_nowait()
        self.backlog -= len(rows)
        return rows

    async def _next(self, timeout: float | None) -> list[OutboxRow]:
        if self._queue.empty():
            if timeout is None:
                rows = await self._queue.get()
            else:
                rows = await asyncio.wait_for(self._queue.get(), timeout)
            self.backlog -= len(rows)
            return rows
        return self._take()

    async def run(self) -> None:
        published: int | None = None  # the highest outbox id published and not yet deleted
        last_cleanup = 0.0
        while True:
            if published is not None and self._queue.empty():
                try:
                    rows = await self._next(OUTBOX_CLEANUP_S)
                except TimeoutError:
                    await self._delete(published)
                    published, last_cleanup = None, time.monotonic()
                    continue
            else:
                rows = await self._next(None)
            self._drain(rows)
            if self._may_gather(rows):
                # Nobody waits for these (in one process tasks and replies are handed over, not
                # published; between processes they were told at the commit): gather a few
                # batches' worth into one produce request instead of one per commit, which
                # costs the broker and this process CPU on the workflows' path. Records that
                # someone waits for end the wait.
                self._urgent.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(AUDIT_GATHER_S):
                        await self._urgent.wait()
                self._drain(rows)
            records = [m for _, m in rows]  # an OutboxMessage is the (topic, key, value, headers) to publish
            while True:
                try:
                    where = await kafka.publish(self.producer, records)
                    break
                except Exception as exc:  # noqa: BLE001 - any produce failure: retry the whole batch
                    await self.backoff.wait(exc)
            self.backoff.recovered()
            self.notices.published(records, where, NO_UPDATES)
            published = rows[-1][0]
            if time.monotonic() - last_cleanup >= OUTBOX_CLEANUP_S:
                await self._delete(published)
                published, last_cleanup = None, time.monotonic()

    def _drain(self, rows: list[OutboxRow]) -> None:
        while not self._queue.empty():
            rows.extend(self._take())

    async def _delete(self, up_to: int) -> None:
        while True:
            try:
                await self.store.delete_outbox(self.shard_id, up_to, self.range_id)
                self.backoff.recovered()
                return
            except outage.DATABASE_ERRORS as exc:
                await self.backoff.wait(exc)
