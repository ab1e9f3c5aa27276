"""A read-only snapshot of the task queues one matching instance holds: how many polls wait
on each and how many tasks wait for a poll (in memory and in the backlog). The web UI's
task-queue page shows it; nothing here changes a queue."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .pollers import PollerSeen
from .queues import TaskQueue


@dataclass(frozen=True)
class QueueStats:
    namespace: str
    task_queue: str
    kind: str  # workflow or activity
    partition: int
    pollers: int  # polls waiting on this instance now
    ready: int  # tasks handed over in process that wait in memory for a poll
    backlog: int  # tasks this instance knows wait in PostgreSQL
    recent_pollers: tuple[PollerSeen, ...] = ()  # identities that polled lately, most recent first

    @property
    def last_poll_ms(self) -> int | None:
        return self.recent_pollers[0].last_poll_ms if self.recent_pollers else None

    def to_json(self) -> dict[str, object]:
        return {"namespace": self.namespace, "task_queue": self.task_queue, "kind": self.kind,
                "partition": self.partition, "pollers": self.pollers, "ready": self.ready, "backlog": self.backlog,
                "recent_pollers": [{"identity": p.identity, "last_poll_ms": p.last_poll_ms}
                                   for p in self.recent_pollers]}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> QueueStats:
        seen = data.get("recent_pollers")
        return cls(str(data["namespace"]), str(data["task_queue"]), str(data["kind"]), int(str(data["partition"])),
                   int(str(data["pollers"])), int(str(data["ready"])), int(str(data["backlog"])),
                   tuple(PollerSeen(str(p["identity"]), int(p["last_poll_ms"]))
                         for p in (seen if isinstance(seen, list) else [])))


def snapshot(queues: Iterable[TaskQueue], namespace: str | None = None) -> list[QueueStats]:
    """One line per queue (of ``namespace`` when given), by name and kind."""
    out = [QueueStats(q.key.namespace, q.key.task_queue, q.key.kind, q.partition,
                      sum(1 for p in q.pollers if not p.future.done()), len(q.ready), q.backlog, q.seen.recent())
           for q in queues if namespace is None or q.key.namespace == namespace]
    return sorted(out, key=lambda s: (s.namespace, s.task_queue, s.kind))
