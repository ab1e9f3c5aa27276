"""Describing task queues: who polls them and what waits for a worker.

One data source for ``GET /api/v1/namespaces/{ns}/task-queues/{task_queue}`` (``kadence
task-queue describe``, ``client.describe_task_queue``) and the web UI's task-queue page:

- pollers (identity and last poll time, per kind) and polls waiting now come from the
  matching instance that owns the queue's partition, in this process or over its internal
  API (``MatchingClient.describe_queue``); they live in its memory only, so they are
  unknown (``pollers_known`` false) while no matching owns the partition;
- the backlog (tasks waiting in PostgreSQL, per kind, and the oldest one's age) comes from
  matching's ``task_backlog`` table, whoever owns the partition.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from kadence_protocol.enums import TaskKind
from services.common.matching import MatchingClient
from services.common.matching.stats import PollerSeen, QueueStats
from services.common.read_bound import BoundedReads
from services.common.schedules import iso_utc

from . import validation as v

Params = Mapping[str, str]
Answer = tuple[int, dict[str, Any]]

PREFIX = "/api/v1/namespaces/{namespace}"
# (method, full path, handler name = OpenAPI operationId), served like handlers.ROUTES.
TASK_QUEUE_ROUTES: list[tuple[str, str, str]] = [
    ("GET", PREFIX + "/task-queues/{task_queue}", "describe_task_queue"),
]


@dataclass(frozen=True)
class Backlog:
    tasks: int = 0
    oldest_ms: int | None = None  # when the oldest waiting task was stored


@dataclass(frozen=True)
class KindDescription:
    """One kind (workflow or activity tasks) of a task queue."""

    kind: TaskKind
    pollers: tuple[PollerSeen, ...] = ()  # polled within the last minutes, most recent first
    polls_waiting: int | None = None  # None: no matching answered
    ready: int = 0  # tasks handed over in memory, waiting for a poll
    backlog: Backlog = field(default_factory=Backlog)

    @property
    def last_poll_ms(self) -> int | None:
        return self.pollers[0].last_poll_ms if self.pollers else None

    @property
    def tasks_waiting(self) -> int:
        return self.ready + self.backlog.tasks

    def to_json(self) -> dict[str, Any]:
        def when(ms: int | None) -> str | None:
            return None if ms is None else iso_utc(ms)

        return {"kind": self.kind.value,
                "pollers": [{"identity": p.identity, "last_poll_time": iso_utc(p.last_poll_ms)} for p in self.pollers],
                "last_poll_time": when(self.last_poll_ms), "polls_waiting": self.polls_waiting,
                "tasks_waiting": self.tasks_waiting, "ready": self.ready, "backlog": self.backlog.tasks,
                "oldest_backlog_time": when(self.backlog.oldest_ms)}


@dataclass(frozen=True)
class TaskQueueDescription:
    namespace: str
    task_queue: str
    kinds: tuple[KindDescription, ...]
    pollers_known: bool  # a matching instance owning the queue answered

    def to_json(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "task_queue": self.task_queue, "pollers_known": self.pollers_known,
                "kinds": [k.to_json() for k in self.kinds]}


def describe_kinds(stats: list[QueueStats] | None, backlog: Mapping[str, Backlog]) -> tuple[KindDescription, ...]:
    """Both kinds of one queue from the owner's stats (None: unknown) and the backlog table."""
    by_kind = {s.kind: s for s in stats or []}
    out = []
    for kind in TaskKind:
        s = by_kind.get(kind.value)
        stored = backlog.get(kind.value, Backlog())
        if s is None:
            out.append(KindDescription(kind, polls_waiting=None if stats is None else 0, backlog=stored))
        else:
            out.append(KindDescription(kind, s.recent_pollers, s.pollers, s.ready, stored))
    return tuple(out)


async def backlog_counts(pool: asyncpg.Pool | BoundedReads, namespace: str,
                         task_queue: str | None = None) -> dict[tuple[str, str], Backlog]:
    """Tasks waiting in PostgreSQL by (task queue, kind), of one queue or the whole namespace."""
    rows = await pool.fetch(
        "SELECT task_queue, kind, count(*) AS n, min(created_at) AS oldest FROM task_backlog"
        " WHERE namespace = $1 AND ($2::text IS NULL OR task_queue = $2) GROUP BY task_queue, kind",
        namespace, task_queue)
    return {(r["task_queue"], r["kind"]): Backlog(int(r["n"]), int(r["oldest"].timestamp() * 1000))
            for r in rows}


class TaskQueueReads:
    def __init__(self, pool: asyncpg.Pool | BoundedReads | None, matching: MatchingClient | None) -> None:
        self.pool = pool
        self.matching = matching

    async def describe(self, namespace: str, task_queue: str) -> TaskQueueDescription:
        stats = None if self.matching is None else await self.matching.describe_queue(namespace, task_queue)
        stored = {} if self.pool is None else await backlog_counts(self.pool, namespace, task_queue)
        kinds = describe_kinds(stats, {kind: b for (_, kind), b in stored.items()})
        return TaskQueueDescription(namespace, task_queue, kinds, pollers_known=stats is not None)


class TaskQueueHandlers:
    """The HTTP operations of ``TASK_QUEUE_ROUTES`` (app.py serves them like the others)."""

    def __init__(self, reads: TaskQueueReads) -> None:
        self.reads = reads

    async def describe_task_queue(self, params: Params, query: Params, body: Mapping[str, Any]) -> Answer:
        ns = v.namespace(params["namespace"])
        name = v.name({}, "task_queue", value=params["task_queue"])
        return 200, (await self.reads.describe(ns, name)).to_json()
