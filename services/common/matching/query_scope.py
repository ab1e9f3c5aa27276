"""Who may answer a query: the namespace and task queues of the worker that sends the answer.

A query id is handed out only to a poller of the query's task queue, but it is not signed: a
worker that learns one (a log, a shared proxy) could answer a query of another namespace or
task queue. The frontend sends the answering caller's scope with the answer and matching,
which knows where it handed the query out, takes the answer only if the scope admits it;
otherwise the query is "not waiting", the same answer as an id nobody issued, so a refused
worker learns nothing about the queries of others.

No scope (an older frontend during a rolling upgrade) checks nothing, as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class QueryScope:
    """The namespace an answer comes from and the task queues its sender may poll there
    (``task_queues`` None: every one, as without authentication)."""

    namespace: str
    task_queues: frozenset[str] | None = None

    def admits(self, namespace: str, task_queue: str) -> bool:
        return namespace == self.namespace and (self.task_queues is None or task_queue in self.task_queues)

    def to_json(self) -> dict[str, Any]:
        return {"namespace": self.namespace,
                "task_queues": None if self.task_queues is None else sorted(self.task_queues)}

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> QueryScope | None:
        """The scope of an internal respond-query body; None when it carries none (an older frontend)."""
        namespace = body.get("namespace")
        if not isinstance(namespace, str):
            return None
        queues = body.get("task_queues")
        if queues is None:
            return cls(namespace)
        if not isinstance(queues, list) or not all(isinstance(q, str) for q in queues):
            raise ValueError("task_queues must be a list of task queue names or null")
        return cls(namespace, frozenset(queues))
