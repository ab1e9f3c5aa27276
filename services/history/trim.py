"""Deleting the ``kadence.requests`` records history has applied (issue 20, goal 5).

A shard's stored offset (``shards.kafka_offset``, written in the transaction of every batch
it commits) is the proof that every command below it is applied; nothing reads those
records again, except resume.py's look at the record just before a stored offset and a
too-large dead letter's pointer to its original. So each round asks the broker, with
Kafka's DeleteRecords, to drop what lies below the offset a shard had stored ``keep_s``
ago (and never past the offset stored now), less one record: the one before the stored
offset stays, for resume.py. Only the shards this process owns are trimmed; a partition
whose offset PostgreSQL does not hold is left alone.

Outbox topics (``kadence.history``, ``.tasks``, ``.replies``, ``.dlq``) are read by other
consumer groups whose offsets live in Kafka: those are trimmed by the topics' retention
settings, as Kafka does it, not here.

A broker that cannot delete records says so once: an answer that refuses the request for
good, or, twice in a row, a connection closed on the request by a broker that still
answers metadata (the development broker's memory storage, Tansu 0.6.0, panics on it).
The trimmer then logs one line and sends nothing more for the life of the process.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import asyncpg
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    IncompatibleBrokerVersion,
    KafkaConnectionError,
    PolicyViolationError,
    TopicAuthorizationFailedError,
    UnsupportedVersionError,
)

from kadence_protocol.kafka_security import KafkaSecurity, client_options
from services.common.kafka import REQUESTS

log = logging.getLogger(__name__)

# Answers after which asking again cannot help until the broker or its ACLs change.
REFUSALS = (UnsupportedVersionError, IncompatibleBrokerVersion, TopicAuthorizationFailedError,
            ClusterAuthorizationFailedError, PolicyViolationError)
# Connections closed on DeleteRecords by a broker that answers otherwise, in a row, taken
# as "does not implement it" (one could be a connection dropped for another reason).
CLOSED_IN_A_ROW = 2
REQUEST_TIMEOUT_S = 30.0


@dataclass
class KeepWindow:
    """The stored offsets seen by each round, kept ``keep_s`` seconds: a record is deleted
    only once its shard had moved past it that long ago."""

    keep_s: float
    _seen: collections.deque[tuple[float, dict[int, int]]] = field(default_factory=collections.deque, init=False,
                                                                   repr=False)

    def bounds(self, now: float, stored: Mapping[int, int]) -> dict[int, int]:
        """Record ``stored`` (partition -> stored offset, read now) and return, per
        partition, the offset below which records may go: the newest offset seen at least
        ``keep_s`` ago, never above the one stored now, less the record resume.py reads."""
        self._seen.append((now, dict(stored)))
        old: dict[int, int] | None = None
        while self._seen and self._seen[0][0] <= now - self.keep_s:
            old = self._seen.popleft()[1]
        if old is None:
            return {}
        self._seen.appendleft((now - self.keep_s, old))  # the bound until a newer one is as old
        return {p: min(old[p], offset) - 1 for p, offset in stored.items() if p in old and min(old[p], offset) > 1}


async def stored_offsets(pool: asyncpg.Pool, partitions: list[int]) -> dict[int, int]:
    """The stored offset of each of ``partitions`` that has a shard row (others are unknown)."""
    rows = await pool.fetch("SELECT shard_id, kafka_offset FROM shards WHERE shard_id = ANY($1::int[])", partitions)
    return {int(r["shard_id"]): int(r["kafka_offset"]) for r in rows}


class RequestTrimmer:
    """One round every so often (periodic.py runs it and backs off after a failure): read
    the owned shards' stored offsets, ask the broker to delete the records below them."""

    def __init__(self, pool: asyncpg.Pool, owned: Callable[[], Mapping[int, int]], bootstrap: str,
                 security: KafkaSecurity | None = None, *, keep_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._pool = pool
        self._owned = owned
        self._bootstrap = bootstrap
        self._security = security
        self._window = KeepWindow(keep_s)
        self._clock = clock
        self._admin: AIOKafkaAdminClient | None = None
        self._asked: dict[int, int] = {}  # the offset last asked for per partition
        self._closed_in_a_row = 0
        self.unsupported: str | None = None  # why the broker cannot delete records, once known
        self.deleted_below: dict[int, int] = {}  # the broker's low watermark after each answer

    async def plan(self) -> dict[int, int]:
        """Partition -> offset below which records are to be deleted this round."""
        owned = sorted(self._owned())
        stored = await stored_offsets(self._pool, owned) if owned else {}
        bounds = self._window.bounds(self._clock(), stored)
        return {p: b for p, b in bounds.items() if b > self._asked.get(p, 0)}

    async def round(self) -> None:
        if self.unsupported is not None:
            return
        plan = await self.plan()
        if not plan:
            return
        admin = await self._client()
        request = {TopicPartition(REQUESTS, p): RecordsToDelete(b) for p, b in plan.items()}
        try:
            answer = await asyncio.wait_for(admin.delete_records(request), REQUEST_TIMEOUT_S)
        except REFUSALS as exc:
            await self._give_up(f"the broker refuses DeleteRecords ({type(exc).__name__})")
            return
        except KafkaConnectionError:
            if not await self._answers_metadata(admin):
                raise  # the broker is down: periodic.py retries with its backoff
            self._closed_in_a_row += 1
            if self._closed_in_a_row >= CLOSED_IN_A_ROW:
                await self._give_up("the broker closes the connection on DeleteRecords, and answers otherwise")
            else:
                await self._drop_client()  # a fresh connection for the second try
            return
        self._closed_in_a_row = 0
        self._asked.update(plan)
        for tp, low in answer.items():
            self.deleted_below[tp.partition] = low
        log.debug("%s trimmed below %s", REQUESTS, {tp.partition: low for tp, low in answer.items()})

    async def close(self) -> None:
        await self._drop_client()

    async def _client(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap, **client_options(self._security))
            try:
                await admin.start()
            except BaseException:
                await admin.close()
                raise
            self._admin = admin
        return self._admin

    async def _drop_client(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            await admin.close()

    @staticmethod
    async def _answers_metadata(admin: AIOKafkaAdminClient) -> bool:
        try:
            await asyncio.wait_for(admin.list_topics(), REQUEST_TIMEOUT_S)
        except (KafkaConnectionError, TimeoutError, OSError):
            return False
        return True

    async def _give_up(self, why: str) -> None:
        self.unsupported = why
        log.warning("%s: %s records are not deleted; the broker keeps them (its retention settings, if"
                    " any, still apply)", why, REQUESTS)
        await self._drop_client()
