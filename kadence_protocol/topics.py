"""The Kafka topics of Kadence and the keys of their records (docs/protocol.md, "Topics").

The one definition: the SDK's Kafka ingress (``kadence.kafka``), the services and the
tools all take the names and keys from here, so a renamed topic or a changed key cannot
leave one side behind.
"""

from __future__ import annotations

__all__ = ["DLQ", "HISTORY", "REPLIES", "REQUESTS", "TASKS", "task_queue_key", "workflow_key"]

#: Commands about workflows, keyed ``namespace/workflow_id``; one partition is one history shard.
REQUESTS = "kadence.requests"
#: Every event of every run (the audit log), keyed ``namespace/workflow_id``.
HISTORY = "kadence.history"
#: Workflow and activity tasks for matching, keyed ``namespace/task_queue``.
TASKS = "kadence.tasks"
#: The outcome of a command that named a ``reply_to``, keyed by it.
REPLIES = "kadence.replies"
#: Records that could not be processed, with the reason, under their original key.
DLQ = "kadence.dlq"


def workflow_key(namespace: str, workflow_id: str) -> bytes:
    """The record key of every command about a workflow: ``namespace/workflow_id``."""
    return f"{namespace}/{workflow_id}".encode()


def task_queue_key(namespace: str, task_queue: str) -> bytes:
    """The record key of a task on ``kadence.tasks``: ``namespace/task_queue``."""
    return f"{namespace}/{task_queue}".encode()
