"""The per-run hash chain that makes history tamper-evident.

Each event's ``hash`` is SHA-256 over the previous event's hash and the event's
own Avro encoding with an empty hash. Changing, dropping or reordering any event
of a run breaks every hash after it, and the audit finds the first break.

The encoding hashed is the writer's: single-object header and body of the
HistoryEvent schema version current when the event was added. Building an event
(:func:`seal`, :func:`event_hash`) uses the current version; verifying one uses
the bytes as they were written (:func:`follows` with ``encoded``), because the same
event re-encoded under a later version (another fingerprint, added fields) is other
bytes, and the chain of every run written before a schema change would seem broken.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from kadence_protocol import avro

# A decoded HistoryEvent (history's state.Event is one); shared by history, which seals
# events, and the audit and the frontend's UI, which verify them.
Event = Mapping[str, Any]

# The zero length of an empty Avro string: the hash as it is when the event is hashed.
_EMPTY_HASH = b"\x00"
# The zig-zag length of a hash (64 hex characters), the prefix of its Avro string.
_DIGEST_LENGTH = avro.string("0" * 64)[:-64]


def hash_of_encoded(previous: str, unhashed: bytes) -> str:
    """The hash of an event from its encoding with an empty hash, in any schema version."""
    return hashlib.sha256(bytes.fromhex(previous) + unhashed).hexdigest()


def event_hash(previous: str, event: Event) -> str:
    """The hash of ``event`` encoded under the current schema: for building events."""
    return hash_of_encoded(previous, avro.encode("HistoryEvent", {**event, "hash": ""}))


def seal(previous: str, event: Event) -> tuple[str, bytes]:
    """Hash ``event`` onto the chain; return (hash, the event's encoding with that hash).

    One Avro encoding serves both: ``hash`` is the last field of HistoryEvent, so the
    encoding with an empty hash ends in its zero length byte, and swapping that byte for
    the encoded hash gives exactly ``avro.encode(event with hash)``.
    """
    # An event built with its empty hash in place (history's builder) is encoded as it is,
    # not copied; a SHA-256 hex digest is always 64 characters, so its length prefix is fixed.
    unhashed = avro.encode("HistoryEvent", event if type(event) is dict and event.get("hash") == ""
                           else {**event, "hash": ""})
    digest = hashlib.sha256(bytes.fromhex(previous) + unhashed).hexdigest()
    return digest, unhashed[:-1] + _DIGEST_LENGTH + digest.encode()


def unhashed_encoding(encoded: bytes, digest: str) -> bytes | None:
    """The bytes an event's hash was made from, given its HistoryEvent encoding as written
    and the ``digest`` it carries: the same bytes with the trailing hash string emptied.

    None when the writer's version has no hash (version 1, before the chain): nothing
    was hashed. Raises ValueError when ``encoded`` is not a HistoryEvent or does not end
    in ``digest``, which a writer never produces.
    """
    schemas = avro.schemas()
    if schemas.name_of(encoded) != "HistoryEvent":
        raise ValueError(f"a {schemas.name_of(encoded)} is not a HistoryEvent")
    if schemas.field_names(encoded)[-1:] != ("hash",):
        return None
    suffix = avro.string(digest)
    if not encoded.endswith(suffix):
        raise ValueError("the encoding does not end in the hash it carries")
    return encoded[: len(encoded) - len(suffix)] + _EMPTY_HASH


def follows(previous: str, event: Event, encoded: bytes | None = None) -> bool:
    """Whether ``event``'s hash chains onto ``previous`` (the hash of the event before it).

    ``encoded`` is the event's HistoryEvent encoding as written (a history_events row, or
    :func:`kadence_protocol.avro.history_event_encoding` of a kadence.history record), ``event`` its
    decoding. Without it the event is re-encoded under the current schema, which is right
    only for events written under the current schema.
    """
    digest = str(event.get("hash", ""))
    try:
        if encoded is None:
            return digest == event_hash(previous, event)
        unhashed = unhashed_encoding(encoded, digest)
        if unhashed is None:
            # Written before events carried a hash: nothing of it can be checked, but it can
            # only come before the run's first sealed event (writers were upgraded, not back).
            return previous == ""
        return digest == hash_of_encoded(previous, unhashed)
    except ValueError:
        # Bytes no writer produces, or a previous hash that is not hex: not a link of the chain.
        return False


def first_break(events: Iterable[Event], encodings: Iterable[bytes] | None = None) -> int | None:
    """The event id of the first event whose hash does not follow, or None if the chain holds.

    ``encodings`` are the events' HistoryEvent encodings as written, in the same order;
    without them the events are re-encoded under the current schema (see :func:`follows`).
    """
    pairs: Iterable[tuple[Event, bytes | None]] = (
        zip(events, encodings, strict=True) if encodings is not None else ((e, None) for e in events))
    previous = ""
    for event, encoded in pairs:
        if not follows(previous, event, encoded):
            return int(event["event_id"])
        previous = event.get("hash", "")
    return None
