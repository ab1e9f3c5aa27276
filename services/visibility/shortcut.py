"""A cheaper decode of ``kadence.history`` records for the visibility projection.

A visibility row needs, of each event, the run it belongs to, its id, time and type, and
the attributes of only a few kinds (``projection.ATTRIBUTE_EVENTS``: the start and the
search-attribute marker). The full decode (``projection.decode``) builds every event's
attributes, payloads included, which made it most of the projection's CPU. This one reads
a record's leading fields by hand (every HistoryRecord version begins with the namespace,
workflow id and run id strings, then the event's id, time and type) and decodes the whole
record only for the kinds whose attributes the fold reads; the others come back with
``attributes`` None and no ``hash``. The fold makes the same update of either (tests).

What it gives up: the bytes past an event's type are not read for the other kinds, so a
record damaged there (the history service never writes one, and the broker checks each
batch's CRC) is folded by its head instead of skipped as unreadable. A record whose head
does not read, or of a writer version laid out otherwise, gets the full decode's verdict.
"""

from __future__ import annotations

import struct
from typing import Any, Protocol

from kadence_protocol import avro

from . import projection

_FINGERPRINT = struct.Struct("<Q")
_HEAD = 2 + _FINGERPRINT.size  # the single-object marker and fingerprint
_HISTORY_RECORD = f"{avro.NAMESPACE}.HistoryRecord"
_LEADING = ("namespace", "workflow_id", "run_id")
_EVENT_LEADING = ("event_id", "event_time", "event_type")
_LONGEST_VARINT = 10  # an Avro long takes at most ten bytes


class Decode(Protocol):
    """Bytes of ``kadence.history`` to a HistoryRecord the fold takes, or ``projection.Skipped``."""

    def __call__(self, value: bytes | None) -> dict[str, Any]: ...


class _Unreadable(Exception):
    """The head does not read as a HistoryRecord's: the full decode says why."""


class ShortcutDecoder:
    """Decodes the heads of HistoryRecords, and in full only the events the fold reads
    the attributes of; a :class:`Decode`."""

    def __init__(self, schemas: avro.Schemas | None = None,
                 attribute_events: frozenset[str] = projection.ATTRIBUTE_EVENTS) -> None:
        self._schemas = schemas  # None: the process-wide set, loaded on first use
        self._attribute_events = attribute_events
        # Per writer fingerprint: the writer's event type symbols, or None when that writer
        # is no HistoryRecord laid out as this reads it (the full decode takes those).
        self._symbols: dict[int, tuple[str, ...] | None] = {}

    def __call__(self, value: bytes | None) -> dict[str, Any]:
        if value is None or len(value) < _HEAD:
            return self._full(value)
        fingerprint = _FINGERPRINT.unpack_from(value, 2)[0]
        if fingerprint in self._symbols:
            symbols = self._symbols[fingerprint]
        else:
            try:
                name, writer = (self._schemas or avro.schemas()).writer(value)
            except avro.DecodeError:
                return self._full(value)  # unknown fingerprints are not remembered: any value may come
            symbols = self._symbols[fingerprint] = _layout(name, writer)
        if symbols is None or value[:2] != avro.MAGIC:
            return self._full(value)
        try:
            namespace, offset = _string(value, _HEAD)
            workflow_id, offset = _string(value, offset)
            run_id, offset = _string(value, offset)
            event_id, offset = _long(value, offset)
            event_time, offset = _long(value, offset)
            kind_index, offset = _long(value, offset)
            kind = symbols[kind_index] if 0 <= kind_index < len(symbols) else None
        except _Unreadable:
            return self._full(value)
        if kind is None or kind in self._attribute_events:
            return self._full(value)
        return {"namespace": namespace, "workflow_id": workflow_id, "run_id": run_id,
                "event": {"event_id": event_id, "event_time": event_time, "event_type": kind, "attributes": None}}

    @staticmethod
    def _full(value: bytes | None) -> dict[str, Any]:
        return projection.decode(value)


def _layout(name: str, writer: Any) -> tuple[str, ...] | None:
    """The event type symbols of a writer schema if it is a HistoryRecord that begins as
    this reads it, else None."""
    if name != _HISTORY_RECORD:
        return None
    fields = writer.get("fields", [])
    if [(f["name"], f["type"]) for f in fields[:3]] != [(n, "string") for n in _LEADING] or len(fields) < 4:
        return None
    event = fields[3]["type"]
    event_fields = event.get("fields", []) if isinstance(event, dict) else []
    if [f["name"] for f in event_fields[:3]] != list(_EVENT_LEADING):
        return None
    event_id, event_time, event_type = (f["type"] for f in event_fields[:3])
    if event_id != "long" or event_time != "long" or not isinstance(event_type, dict) \
            or event_type.get("type") != "enum":
        return None
    return tuple(event_type["symbols"])


def _long(data: bytes, offset: int) -> tuple[int, int]:
    """The zig-zag varint at ``offset`` and the offset past it."""
    try:
        byte = data[offset]
        if byte < 0x80:  # most lengths: one byte
            return (byte >> 1) ^ -(byte & 1), offset + 1
        n, shift, end = byte & 0x7F, 7, offset + _LONGEST_VARINT
        while True:
            offset += 1
            if offset >= end:
                raise _Unreadable("a varint longer than a long")
            byte = data[offset]
            n |= (byte & 0x7F) << shift
            if byte < 0x80:
                return (n >> 1) ^ -(n & 1), offset + 1
            shift += 7
    except IndexError:
        raise _Unreadable("a varint runs past the end") from None


def _string(data: bytes, offset: int) -> tuple[str, int]:
    length, offset = _long(data, offset)
    end = offset + length
    if length < 0 or end > len(data):
        raise _Unreadable("a string does not fit the record")
    try:
        return data[offset:end].decode(), end
    except UnicodeDecodeError:
        raise _Unreadable("a string is not UTF-8") from None


decode: Decode = ShortcutDecoder()
