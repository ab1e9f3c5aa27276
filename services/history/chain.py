"""The per-run hash chain that makes history tamper-evident.

Each event's ``hash`` is SHA-256 over the previous event's hash and the event's
own Avro encoding with an empty hash. Changing, dropping or reordering any event
of a run breaks every hash after it, and the audit finds the first break.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from kadence import avro


def event_hash(previous: str, event: dict[str, Any]) -> str:
    body = avro.encode("HistoryEvent", {**event, "hash": ""})
    return hashlib.sha256(bytes.fromhex(previous) + body).hexdigest()


def seal(previous: str, event: dict[str, Any]) -> tuple[str, bytes]:
    """Hash ``event`` onto the chain; return (hash, the event's encoding with that hash).

    One Avro encoding serves both: ``hash`` is the last field of HistoryEvent, so the
    encoding with an empty hash ends in its zero length byte, and swapping that byte for
    the encoded hash gives exactly ``avro.encode(event with hash)``.
    """
    unhashed = avro.encode("HistoryEvent", {**event, "hash": ""})
    digest = hashlib.sha256(bytes.fromhex(previous) + unhashed).hexdigest()
    return digest, unhashed[:-1] + avro.string(digest)


def first_break(events: Iterable[dict[str, Any]]) -> int | None:
    """The event id of the first event whose hash does not follow, or None if the chain holds."""
    previous = ""
    for event in events:
        if event.get("hash", "") != event_hash(previous, event):
            return int(event["event_id"])
        previous = event["hash"]
    return None
