"""Refused commands nobody waits for: a dead letter instead of silence.

A command produced straight to ``kadence.requests`` may carry no ``reply_to``. When history
refuses it (a signal, cancel, terminate, update or reset for a workflow with no such run, a
start refused as ``WorkflowAlreadyStarted``), there is no Reply to send; the refusal then goes
to ``kadence.dlq`` as a ``DeadLetter`` naming the error type and message, with the command's
original key and bytes and its source offset, so ``kadence dlq redrive`` can give it another
go once the cause is fixed. The dead letter joins the batch's outbox: it leaves only after
the commit, like a Reply would.

Only the commands a user sends are dead-lettered (:data:`USER_COMMANDS`), told apart by
their record type, which a sender cannot disguise: history's own commands to other shards
(``StartChildWorkflowExecution``, ``SignalExternalWorkflowExecution``, ``ChildWorkflowNotice``,
``ApplyParentClosePolicy``) are record types of their own whose refusals travel back to the
parent as notices, and a worker's answers (``Record*``/``Respond*``) are never refused, a stale
one is dropped. Fields a sender sets (``identity``, headers) play no part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from services.common import kafka

from .builder import OutboxMessage

# The commands whose refusal, with no reply_to, is dead-lettered.
USER_COMMANDS = frozenset({
    "StartWorkflowExecution",
    "SignalWithStartWorkflowExecution",
    "SignalWorkflowExecution",
    "TerminateWorkflowExecution",
    "RequestCancelWorkflowExecution",
    "UpdateWorkflowExecution",
    "ResetWorkflowExecution",
})


class Source(Protocol):
    """What a command's record tells of where it came from (a fetched ConsumerRecord or a
    command handed over by a frontend here, neighbours.HandedCommand)."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...


@dataclass(frozen=True)
class Taken:
    """The user command a batch is running, and where its record came from."""

    name: str
    namespace: str
    workflow_id: str
    request_id: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes

    def answers(self, command: dict[str, Any]) -> bool:
        """Whether a reply about ``command`` is the answer to this command (and not to
        another caller of the same run, such as an update's waiter)."""
        return (command.get("namespace"), command.get("workflow_id"), command.get("request_id") or "") \
            == (self.namespace, self.workflow_id, self.request_id)

    def reason(self, error_type: str | None, error_message: str | None) -> str:
        return (f"{self.name} refused: {error_type or 'Refused'}: {error_message or '(no message)'}"
                " (it had no reply_to: this dead letter is its answer)")

    def dead_letter(self, error_type: str | None, error_message: str | None,
                    headers: tuple[tuple[str, bytes], ...] = ()) -> OutboxMessage:
        """The DeadLetter for the batch's outbox, published after the commit."""
        value = kafka.dead_letter(source_topic=self.topic, partition=self.partition, offset=self.offset,
                                  key=self.key, value=self.value, reason=self.reason(error_type, error_message))
        # Keyed as the command was (one workflow's letters in order on kadence.dlq).
        key = self.key if self.key is not None else kafka.workflow_key(self.namespace, self.workflow_id)
        return OutboxMessage(kafka.DLQ, key, value, headers)


def taken(name: str, cmd: dict[str, Any], record: Source, offset: int) -> Taken | None:
    """The command at ``offset`` as a :class:`Taken` if its refusal is to be dead-lettered
    when it has no reply_to; None for history's own commands and a worker's answers."""
    if name not in USER_COMMANDS or record.value is None or cmd.get("reply_to"):
        return None
    return Taken(name, str(cmd.get("namespace") or ""), str(cmd.get("workflow_id") or ""),
                 str(cmd.get("request_id") or ""), record.topic, record.partition, offset, record.key, record.value)
