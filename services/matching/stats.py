"""A read-only snapshot of the task queues one matching instance holds: how many polls wait
on each and how many tasks wait for a poll (in memory and in the backlog). The web UI's
task-queue page shows it; nothing here changes a queue."""

from __future__ import annotations

from collections.abc import Iterable

from services.common.matching.stats import QueueStats

from .queues import TaskQueue


def snapshot(queues: Iterable[TaskQueue], namespace: str | None = None) -> list[QueueStats]:
    """One line per queue (of ``namespace`` when given), by name and kind."""
    out = [QueueStats(q.key.namespace, q.key.task_queue, q.key.kind, q.partition,
                      sum(1 for p in q.pollers if not p.future.done()), len(q.ready), q.backlog, q.seen.recent())
           for q in queues if namespace is None or q.key.namespace == namespace]
    return sorted(out, key=lambda s: (s.namespace, s.task_queue, s.kind))
