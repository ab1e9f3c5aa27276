"""The request kinds history's operations take as typed records, and their adapter to the shard.

A command on ``kadence.requests`` is decoded (``kadence.avro``), validated
(``services/common/validation.py``) and admitted (ledger.py) as a dict; :func:`typed` turns
it into its record type (``kadence_protocol.records``) for an operation that takes one, so
the operation reads ``req.workflow_id``, checked by mypy, instead of ``cmd["workflow_id"]``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from kadence_protocol.records import (
    RequestCancelWorkflowExecution,
    SignalWithStartWorkflowExecution,
    SignalWorkflowExecution,
    StartWorkflowExecution,
    TerminateWorkflowExecution,
    UpdateWorkflowExecution,
)

if TYPE_CHECKING:
    from .engine import Context

R = TypeVar("R")
Handler = Callable[["Context", dict[str, Any]], Awaitable[None]]
# The requests about a run that may name it (its run id; none: the workflow id's current run).
Targeted = (SignalWorkflowExecution | RequestCancelWorkflowExecution | TerminateWorkflowExecution
            | UpdateWorkflowExecution)
# The requests from outside a run (a client, a frontend), each answered on kadence.replies.
Request = StartWorkflowExecution | SignalWithStartWorkflowExecution | Targeted


def typed(load: Callable[[Mapping[str, Any]], R], operation: Callable[[Context, R], Awaitable[None]]) -> Handler:
    """The shard's handler for an operation that takes a record: ``load`` (a record type's
    ``from_dict``) makes it of the decoded command."""

    async def handle(ctx: Context, cmd: dict[str, Any]) -> None:
        await operation(ctx, load(cmd))

    handle.__name__ = getattr(operation, "__name__", "handle")
    return handle


def address(req: Request) -> dict[str, Any]:
    """What ``Context.reply`` needs of a request: where the answer goes and what it answers."""
    return {"namespace": req.namespace, "workflow_id": req.workflow_id, "request_id": req.request_id,
            "reply_to": req.reply_to}
