"""What a frontend in this process hands to history: commands taken by offset.

In one process (``kadence dev``) a command the frontend produced is taken from the
broker's acknowledgement (:class:`HandedCommand`) instead of waiting for the consumer to
fetch it (services/common/colocation.py, docs/colocation.md). It is taken once and in
offset order, as a fetched record is (intake.py).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from services.common.validation import Limits

Closed = tuple[str, dict[str, Any]]  # run id, its outcome (services/common/outcome.py)


class HandedCommand(NamedTuple):
    """A command that a frontend in this process produced to the shard's partition, taken
    from the broker's acknowledgement instead of waiting for the consumer to fetch it."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    # The limits under which the frontend here ran the very check history runs
    # (validation.check_command) on the record it encoded as ``value``; None: not checked.
    checked: Limits | None = None
