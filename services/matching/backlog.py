"""PostgreSQL side of matching: the task backlog and the partition-owner registry."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from .queues import QueueKey


@dataclass(frozen=True)
class BacklogRow:
    task_id: str
    partition: int
    key: QueueKey
    payload: bytes
    traceparent: str | None = None  # the dispatch span's context, handed to the worker later


class BacklogStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def counts(self, partition: int) -> dict[QueueKey, int]:
        rows = await self._pool.fetch(
            "SELECT namespace, task_queue, kind, count(*) AS n FROM task_backlog"
            " WHERE partition = $1 GROUP BY namespace, task_queue, kind",
            partition,
        )
        return {QueueKey(r["namespace"], r["task_queue"], r["kind"]): int(r["n"]) for r in rows}

    async def count(self, key: QueueKey) -> int:
        n = await self._pool.fetchval(
            "SELECT count(*) FROM task_backlog WHERE namespace = $1 AND task_queue = $2 AND kind = $3",
            key.namespace, key.task_queue, key.kind,
        )
        return int(n or 0)

    async def add(self, rows: Sequence[BacklogRow]) -> list[QueueKey]:
        """Store rows in order; duplicates by task_id collapse. Return the keys of rows stored."""
        if not rows:
            return []
        stored = await self._pool.fetch(
            "INSERT INTO task_backlog (task_id, partition, namespace, task_queue, kind, payload, traceparent)"
            " SELECT t.task_id, t.partition, t.namespace, t.task_queue, t.kind, t.payload, t.traceparent"
            " FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::text[], $6::bytea[], $7::text[])"
            "   WITH ORDINALITY AS t(task_id, partition, namespace, task_queue, kind, payload, traceparent, ord)"
            " ORDER BY t.ord"
            " ON CONFLICT (task_id) DO NOTHING"
            " RETURNING namespace, task_queue, kind",
            [r.task_id for r in rows], [r.partition for r in rows], [r.key.namespace for r in rows],
            [r.key.task_queue for r in rows], [r.key.kind for r in rows], [r.payload for r in rows],
            [r.traceparent for r in rows],
        )
        return [QueueKey(r["namespace"], r["task_queue"], r["kind"]) for r in stored]

    async def add_front(self, row: BacklogRow) -> bool:
        """Put a task back ahead of every other task of its queue."""
        status = await self._pool.execute(
            "INSERT INTO task_backlog (task_id, partition, namespace, task_queue, kind, payload, traceparent, seq)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, (SELECT coalesce(min(seq), 1) - 1 FROM task_backlog"
            "   WHERE namespace = $3 AND task_queue = $4 AND kind = $5))"
            " ON CONFLICT (task_id) DO NOTHING",
            row.task_id, row.partition, row.key.namespace, row.key.task_queue, row.key.kind, row.payload,
            row.traceparent,
        )
        return bool(status.endswith(" 1"))

    async def take(self, key: QueueKey, limit: int) -> list[tuple[str, bytes, str | None]]:
        """Remove and return up to ``limit`` of the oldest tasks (task_id, payload, traceparent)."""
        rows = await self._pool.fetch(
            "DELETE FROM task_backlog WHERE task_id IN ("
            "  SELECT task_id FROM task_backlog"
            "  WHERE namespace = $1 AND task_queue = $2 AND kind = $3"
            "  ORDER BY seq LIMIT $4 FOR UPDATE SKIP LOCKED)"
            " RETURNING task_id, payload, traceparent, seq",
            key.namespace, key.task_queue, key.kind, limit,
        )
        return [(r["task_id"], bytes(r["payload"]), r["traceparent"]) for r in sorted(rows, key=lambda r: r["seq"])]

    async def claim(self, partitions: Sequence[int], address: str, owner: str) -> None:
        await self._pool.executemany(
            "INSERT INTO matching_owners (partition, address, owner, updated_at) VALUES ($1, $2, $3, now())"
            " ON CONFLICT (partition) DO UPDATE"
            " SET address = EXCLUDED.address, owner = EXCLUDED.owner, updated_at = now()",
            [(p, address, owner) for p in partitions],
        )

    async def release(self, partitions: Sequence[int], owner: str) -> None:
        # Only our own rows: a new owner may already have claimed the partition.
        await self._pool.execute(
            "DELETE FROM matching_owners WHERE partition = ANY($1::int[]) AND owner = $2",
            list(partitions), owner,
        )
