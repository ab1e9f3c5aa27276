"""Commands a shard cannot take: isolating them from a batch the store refuses, and
answering their senders.

A batch whose commit PostgreSQL refuses for what a command holds (a NUL in a text
column, a number beyond bigint, an index row too large, a violated constraint) would be
refused the same way on every retry and freeze its shard. Such a batch is bisected
instead: its halves are committed in offset order, a half that fails is split again, and
each command that fails alone is dead-lettered with the database's error while the rest
commit. The stored offset thus only ever moves past records committed or dead-lettered.

Errors are told apart by asyncpg's exception classes: the data-exception, integrity and
program-limit classes are about content; connection errors and outages are not, and
keep the shard's retry.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg
from aiokafka.structs import ConsumerRecord

from kadence_protocol import avro

from . import engine

log = logging.getLogger(__name__)

# Refusals tied to the values a batch writes. ShardOwnershipLost and WorkflowNotNew (the
# fencing and new-workflow checks of the commit) are HistoryErrors, not among these.
CONTENT_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.DataError,  # class 22: NUL in text, numeric out of range, invalid text ...
    asyncpg.IntegrityConstraintViolationError,  # class 23
    asyncpg.ProgramLimitExceededError,  # class 54: an index row or value too large
)

# The error type of the Reply a refused command's sender gets (a 400 over HTTP).
REFUSED = "InvalidArgument"

U = TypeVar("U")


def is_content_error(exc: BaseException) -> bool:
    return isinstance(exc, CONTENT_ERRORS)


async def bisect(units: Sequence[U], commit: Callable[[Sequence[U]], Awaitable[None]],
                 give_up: Callable[[U, Exception], Awaitable[None]], *, failed: Exception | None = None) -> None:
    """Commit ``units`` in order, isolating those whose commit fails for their content.

    ``commit`` commits a run of consecutive units in one transaction, raising one of
    CONTENT_ERRORS when the store refuses it. A run that fails is split in halves, the
    first committed (or bisected) before the second, down to single units, each handed
    to ``give_up`` with its error (to dead-letter it and move past it). ``failed``: the
    whole of ``units`` failed already with this error, so it is not committed again.
    Any other error propagates.
    """
    if failed is None:
        try:
            await commit(units)
            return
        except CONTENT_ERRORS as exc:
            failed = exc
    if len(units) <= 1:
        if units:
            await give_up(units[0], failed)
        return
    middle = len(units) // 2
    await bisect(units[:middle], commit, give_up)
    await bisect(units[middle:], commit, give_up)


def units(batch: Sequence[Any]) -> list[Any]:
    """A shard batch (lists of records, timer firings) as its smallest parts, in order:
    one list per record, and each timer firing."""
    out: list[Any] = []
    for item in batch:
        if isinstance(item, list):
            out.extend([record] for record in item)
        else:
            out.append(item)
    return out


def reason(exc: BaseException) -> str:
    """The dead-letter reason of a command the store refused."""
    return f"the store refused the command: {type(exc).__name__}: {exc}"


def reply_refused(ctx: engine.Context, record: ConsumerRecord[bytes, bytes], why: str) -> None:
    """Tell the sender of a dead-lettered command, if it waits for a reply, why it was refused."""
    if record.value is None:
        return
    try:
        _, cmd = avro.decode(record.value)
    except avro.DecodeError:
        return  # nothing to address a reply to
    if not isinstance(cmd.get("reply_to"), str) or not isinstance(cmd.get("request_id"), str):
        return
    if not isinstance(cmd.get("namespace"), str) or not isinstance(cmd.get("workflow_id"), str):
        return
    ctx.reply(cmd, ok=False, error_type=REFUSED, error_message=why)
