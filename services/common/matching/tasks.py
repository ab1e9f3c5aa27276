"""The task a matching poll hands out, and the kinds of tasks: shared by matching and its client."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kadence_protocol import avro

WORKFLOW = "workflow"
ACTIVITY = "activity"
QUERY = "query"
KINDS = (WORKFLOW, ACTIVITY)
TASK_KINDS = {"WorkflowTask": WORKFLOW, "ActivityTask": ACTIVITY}  # record name -> kind
TASK_NAMES = {kind: name for name, kind in TASK_KINDS.items()}


@dataclass(frozen=True, eq=False)
class MatchedTask:
    """A task handed to a poller: a decoded WorkflowTask/ActivityTask, or a query task.

    ``payload`` is the Avro record as it came from Kafka (``None`` for queries, for tasks
    that crossed the internal HTTP API and for tasks history in this process handed
    over), kept so a task can be put back into the backlog (see :meth:`encoded`).
    ``traceparent`` is the W3C trace context the worker continues (matching's dispatch
    span), or ``None`` when tracing is off. ``events`` are the events a workflow task
    carries, already decoded, when history in this process handed the task over.
    """

    kind: str
    task_id: str
    task: dict[str, Any]
    payload: bytes | None = field(default=None, repr=False)
    traceparent: str | None = None
    events: Sequence[Mapping[str, Any]] | None = field(default=None, repr=False)
    # A workflow task handed by history in this process straight to a waiting poll: the
    # update requests waiting as of the commit that scheduled it (None: read them).
    updates: Sequence[Mapping[str, Any]] | None = field(default=None, repr=False)

    def without_updates(self) -> MatchedTask:
        """This task without the update requests of its commit (whoever takes it later reads
        them). Built directly: dataclasses.replace checks and copies field by field, and
        matching does this for every handed task a poll does not take at once."""
        if self.updates is None:
            return self
        return MatchedTask(self.kind, self.task_id, self.task, self.payload, self.traceparent, self.events)

    def encoded(self) -> bytes | None:
        """The task's Avro record: its payload, or the record encoded now (None for queries)."""
        return None if self.kind == QUERY else self.encode()

    def encode(self) -> bytes:
        """The Avro record of a workflow or activity task: its payload, or encoded now."""
        return self.payload if self.payload is not None else avro.encode(TASK_NAMES[self.kind], self.task)

    def to_json(self) -> dict[str, Any]:
        # The events a workflow task carries are Avro bytes: they cross the internal API in
        # base64, so that the frontend answering the poll need not read them from the store
        # (a PostgreSQL round trip on every workflow task between processes).
        task = {k: v for k, v in self.task.items() if k != "events"}
        out: dict[str, Any] = {"kind": self.kind, "task_id": self.task_id, "task": task,
                               "traceparent": self.traceparent}
        events = self.task.get("events")
        if events is not None:
            out["events"] = [base64.b64encode(e).decode() for e in events]
        if self.updates is not None:
            out["updates"] = [dict(u) for u in self.updates]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MatchedTask:
        tp = data.get("traceparent")
        task = dict(data["task"])
        events = data.get("events")
        if isinstance(events, list):
            task["events"] = [base64.b64decode(str(e), validate=True) for e in events]
        updates = data.get("updates")
        return cls(kind=str(data["kind"]), task_id=str(data["task_id"]), task=task,
                   traceparent=str(tp) if tp else None,
                   updates=[dict(u) for u in updates] if isinstance(updates, list) else None)
