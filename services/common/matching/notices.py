"""Task notices: what history tells matching's owner of a partition right after the commit
that wrote tasks for ``kadence.tasks``, while its outbox relay publishes them.

A notice is a hint, never the record. The task itself travels through the broker as
always, and matching's consumer ingests it (backlog, offsets, dead letters). A notice lets
matching hand a task to a poll that is already waiting without first waiting out a fetch,
so a hop between processes costs an HTTP request instead of a fetch wait. Matching takes
a noticed task only while its consumer has not yet been given its record (a notice sent
after publication names the record's offset; one sent at the commit, UNPUBLISHED, is
checked by task id against the records the consumer ingested lately), and the consumer
then drops the fetched copy as a task it has just handed out. A notice that is lost, late
or refused changes nothing but the latency. docs/colocation.md ("Task notices") has the
rules.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Headers = tuple[tuple[str, bytes], ...]

# The offset of a notice sent at the commit, before the relay has published the record.
UNPUBLISHED = -1


@dataclass(frozen=True, slots=True)
class TaskNotice:
    """One task record as the commit wrote it, and the offset the broker gave it (UNPUBLISHED:
    told at the commit, before the relay's publication)."""

    offset: int
    value: bytes  # the Avro record on kadence.tasks
    headers: Headers = ()  # its trace headers
    # A workflow task's run: the update requests waiting as of the commit that wrote the task
    # (None: not known, the frontend reads them as it hands the task out).
    updates: list[dict[str, Any]] | None = None

    def to_json(self) -> dict[str, Any]:
        out = {"offset": self.offset, "value": _b64(self.value), "headers": [[k, _b64(v)] for k, v in self.headers]}
        if self.updates is not None:
            out["updates"] = self.updates
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TaskNotice:
        updates = data.get("updates")
        if updates is not None and not (isinstance(updates, list) and all(isinstance(u, dict) for u in updates)):
            raise TypeError("updates must be a list of objects")
        return cls(int(data["offset"]), base64.b64decode(str(data["value"]), validate=True),
                   tuple((str(k), base64.b64decode(str(v), validate=True)) for k, v in data.get("headers") or ()),
                   updates)


def notices_to_json(partition: int, notices: Sequence[TaskNotice]) -> dict[str, Any]:
    return {"partition": partition, "tasks": [n.to_json() for n in notices]}


def notices_from_json(data: dict[str, Any]) -> tuple[int, list[TaskNotice]]:
    return int(data["partition"]), [TaskNotice.from_json(t) for t in data.get("tasks") or ()]


@dataclass(frozen=True, slots=True)
class NoticeOutcome:
    """What matching did with one request's notices."""

    matched: int = 0  # handed to waiting polls
    stale: int = 0  # the consumer had been given the record already: it ingests it (or did)
    left: int = 0  # no poll waiting (or a copy of a task handed out): the fetched record decides


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()
