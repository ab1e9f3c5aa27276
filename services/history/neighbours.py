"""What history hands to the services in its own process, and what they hand to it.

In one process (``kadence dev``) the hops between the services need not go through the
broker: a command the frontend produced is taken from the broker's acknowledgement by
offset (:class:`HandedCommand`), and after each commit matching, the frontend and its
result waits take what the batch produced for them (:class:`Neighbours`). Every
invariant holds as on the broker path: commands are taken once and in offset order,
and nothing is handed over before it is committed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from .builder import LocalTask

Closed = tuple[str, dict[str, Any]]  # run id, its outcome (services/common/outcome.py)


@dataclass
class Neighbours:
    """The services in this process that take what a commit produced straight from history.

    Each is called after the commit, with what the batch committed: matching with the
    tasks of the queues it said it takes (``takes_tasks``, asked while the batch runs;
    those tasks are then not published at all), the frontends named in
    ``reply_to`` with the replies to their commands (which then are not published at
    all: nobody else reads them), and the result waits with the runs that closed (the
    close notification still goes out for frontends in other processes). One object,
    shared by every shard of the service.
    """

    takes_tasks: Callable[[str, str], bool] | None = None  # (namespace, task queue)
    on_tasks: Callable[[list[LocalTask]], None] | None = None
    reply_to: frozenset[str] = frozenset()
    on_replies: Callable[[list[dict[str, Any]]], None] | None = None
    on_closed: Callable[[list[Closed]], None] | None = None


class HandedCommand(NamedTuple):
    """A command that a frontend in this process produced to the shard's partition, taken
    from the broker's acknowledgement instead of waiting for the consumer to fetch it."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
