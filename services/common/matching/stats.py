"""What a matching instance tells its clients about a task queue (the internal API's
``/internal/describe`` and the in-process snapshot): the queue's polls, tasks and recent
pollers. The wire shape of matching's stats, shared by matching and the services that
read them through the client."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PollerSeen", "QueueStats"]


@dataclass(frozen=True)
class PollerSeen:
    identity: str
    last_poll_ms: int  # epoch milliseconds of its latest poll


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
