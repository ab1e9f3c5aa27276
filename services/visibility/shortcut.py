"""A cheaper decode of ``kadence.history`` records for the visibility projection.

A visibility row needs, of each event, the run it belongs to, its id, time and type, and
the attributes of only a few kinds (``projection.ATTRIBUTE_EVENTS``: the start and the
search-attribute marker). The full decode (``projection.decode``) builds every event's
attributes, payloads included, which made it most of the projection's CPU. This one reads
a record's leading fields by hand (every HistoryRecord version begins with the namespace,
workflow id and run id strings, then the event's id, time and type) and decodes the whole
record only for the kinds whose attributes the fold reads; the others come back with
``attributes`` None and no ``hash``. The fold makes the same update of either (tests).
:meth:`ShortcutDecoder.fold` (``shortcut.fold``) goes one step further for a batch: it
builds no record per event, finds a run by the raw bytes of its three strings (decoded
once per run) and folds the head in place, as ``projection.fold`` of the decoded records.

What it gives up: the bytes past an event's type are not read for the other kinds, so a
record damaged there (the history service never writes one, and the broker checks each
batch's CRC) is folded by its head instead of skipped as unreadable. A record whose head
does not read, or of a writer version laid out otherwise, gets the full decode's verdict.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from kadence_protocol import avro

from . import projection

_FINGERPRINT = struct.Struct("<Q")
_HEAD = 2 + _FINGERPRINT.size  # the single-object marker and fingerprint
_HISTORY_RECORD = f"{avro.NAMESPACE}.HistoryRecord"
_LEADING = ("namespace", "workflow_id", "run_id")
_EVENT_LEADING = ("event_id", "event_time", "event_type")
_LONGEST_VARINT = 10  # an Avro long takes at most ten bytes
_UNSEEN: tuple[str, ...] = ()  # a writer fingerprint not looked up yet
_SIX_BYTES, _SIX_BYTES_MARKS = 0x808080808080, 0x008080808080  # continuation bits of a six-byte varint


class Decode(Protocol):
    """Bytes of ``kadence.history`` to a HistoryRecord the fold takes, or ``projection.Skipped``."""

    def __call__(self, value: bytes | None) -> dict[str, Any]: ...


# What the shortcut reads of a record: where its three strings end, and the event's id,
# time and type (a plain tuple: one is made per record).
_Head = tuple[int, int, int, str]


def _ignore(index: int, exc: projection.Skipped) -> None:
    pass


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
        head = self._head(value)
        if head is None or head[3] in self._attribute_events:
            return self._full(value)
        assert value is not None
        run_end, event_id, event_time, kind = head
        try:
            namespace, workflow_id, run_id = _run_strings(value, run_end)
        except _Unreadable:
            return self._full(value)
        return {"namespace": namespace, "workflow_id": workflow_id, "run_id": run_id,
                "event": {"event_id": event_id, "event_time": event_time, "event_type": kind, "attributes": None}}

    def fold(self, values: Sequence[bytes | None],
             skipped: Callable[[int, projection.Skipped], None] = _ignore, *,
             into: dict[bytes, projection.RunUpdate] | None = None, first: int = 0) -> list[projection.RunUpdate]:
        """``projection.fold`` of the records in ``values``, without building a record per
        event: a run is found by the raw bytes of its three strings (decoded once per run),
        and only the kinds whose attributes the fold reads are decoded in full. A record
        the full decode skips is passed to ``skipped`` with its index, and left out.

        A batch may be folded a slice at a time (the consumer lets its loop run between
        slices): ``into`` holds the updates of the slices before, by run, and is completed in
        place; ``first`` is the index of ``values[0]`` in the batch, as ``skipped`` is told."""
        updates: dict[bytes, projection.RunUpdate] = {} if into is None else into
        closing = projection.CLOSING_EVENTS
        head_of, attribute_events = self._head, self._attribute_events
        for index, value in enumerate(values):
            head = head_of(value)
            if head is not None:
                assert value is not None
                run_end, event_id, event_time, kind = head
                if kind not in attribute_events:
                    run = value[_HEAD:run_end]
                    update = updates.get(run)
                    if update is None:
                        update = self._new_update(value, run_end, event_id, event_time)
                        if update is not None:
                            updates[run] = update
                    if update is not None:
                        # RunUpdate.take, for a kind whose attributes it does not read.
                        if event_id > update.last_event_id:
                            update.last_event_id, update.newest_event_time = event_id, event_time
                        status = closing.get(kind)
                        if status is not None:
                            update.status, update.close_time = status, event_time
                        continue
            try:
                record = self._full(value)
            except projection.Skipped as exc:
                skipped(first + index, exc)
                continue
            assert value is not None
            run = value[_HEAD:head[0]] if head is not None else b"".join(
                avro.string(record[name]) for name in _LEADING)
            event = record["event"]
            update = updates.get(run)
            if update is None:
                update = updates[run] = projection.RunUpdate(
                    record["namespace"], record["workflow_id"], record["run_id"],
                    last_event_id=int(event["event_id"]), newest_event_time=int(event["event_time"]))
            update.take(event)
        return list(updates.values())

    @staticmethod
    def _new_update(value: bytes, run_end: int, event_id: int, event_time: int) -> projection.RunUpdate | None:
        """A run's update, begun by the event read; None when its strings do not read."""
        try:
            namespace, workflow_id, run_id = _run_strings(value, run_end)
        except _Unreadable:
            return None
        return projection.RunUpdate(namespace, workflow_id, run_id, last_event_id=event_id,
                                    newest_event_time=event_time)

    def _head(self, value: bytes | None) -> _Head | None:
        """The head of a HistoryRecord as this reads it, or None (the full decode decides)."""
        if value is None or len(value) < _HEAD or not value.startswith(avro.MAGIC):
            return None
        fingerprint = _FINGERPRINT.unpack_from(value, 2)[0]
        symbols = self._symbols.get(fingerprint, _UNSEEN)
        if symbols is _UNSEEN:
            try:
                name, writer = (self._schemas or avro.schemas()).writer(value)
            except avro.DecodeError:
                return None  # unknown fingerprints are not remembered: any value may come
            symbols = self._symbols[fingerprint] = _layout(name, writer)
        if symbols is None:
            return None
        # Inline for the common case (lengths, ids and kinds of one byte): this runs per record.
        try:
            offset = _HEAD
            for _ in range(3):
                byte = value[offset]
                if byte < 0x80 and not byte & 1:
                    offset += 1 + (byte >> 1)
                else:
                    offset = _skip(value, offset)
            if offset > len(value):
                return None
            run_end = offset
            byte = value[offset]
            if byte < 0x80:
                event_id, offset = (byte >> 1) ^ -(byte & 1), offset + 1
            else:
                event_id, offset = _long(value, offset)
            # A time in milliseconds since 1970 is a varint of six bytes (2004-2248): read at once.
            chunk = int.from_bytes(value[offset:offset + 6], "little")
            if chunk & _SIX_BYTES == _SIX_BYTES_MARKS:
                n = (chunk & 0x7F) | (chunk >> 1 & 0x3F80) | (chunk >> 2 & 0x1FC000) | (chunk >> 3 & 0xFE00000) \
                    | (chunk >> 4 & 0x7F0000000) | (chunk >> 5 & 0x3F800000000)
                event_time, offset = (n >> 1) ^ -(n & 1), offset + 6
            else:
                event_time, offset = _long(value, offset)
            byte = value[offset]
            if byte < 0x80:
                kind_index = (byte >> 1) ^ -(byte & 1)
            else:
                kind_index, offset = _long(value, offset)
        except (_Unreadable, IndexError):
            return None
        if not 0 <= kind_index < len(symbols):
            return None
        return run_end, event_id, event_time, symbols[kind_index]

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


def _skip(data: bytes, offset: int) -> int:
    """The offset past the string at ``offset``, unread."""
    length, offset = _long(data, offset)
    end = offset + length
    if length < 0 or end > len(data):
        raise _Unreadable("a string does not fit the record")
    return end


def _run_strings(data: bytes, end: int) -> tuple[str, str, str]:
    """The namespace, workflow id and run id of a record whose strings end at ``end``."""
    namespace, offset = _string(data, _HEAD)
    workflow_id, offset = _string(data, offset)
    run_id, offset = _string(data, offset)
    if offset != end:
        raise _Unreadable("the strings moved")
    return namespace, workflow_id, run_id


def _string(data: bytes, offset: int) -> tuple[str, int]:
    length, offset = _long(data, offset)
    end = offset + length
    if length < 0 or end > len(data):
        raise _Unreadable("a string does not fit the record")
    try:
        return data[offset:end].decode(), end
    except UnicodeDecodeError:
        raise _Unreadable("a string is not UTF-8") from None


_DECODER = ShortcutDecoder()
decode: Decode = _DECODER
fold = _DECODER.fold
