"""Avro single-object encoding of every record Kadence puts on Kafka.

The ``.avsc`` files under ``schemas/`` are the one source of truth. A record on
the wire is ``C3 01`` + the 8-byte little-endian CRC-64-AVRO fingerprint of the
writer schema's parsing canonical form + the Avro binary body, so any producer
holding ``schemas/`` can write a valid record without a schema registry.

Every historical version of a schema stays under ``schemas/versions/``; a record
written with an old version is resolved to the current one on read (new fields
take their defaults), and a reader meets unknown fields only as skipped bytes.
A HistoryRecord embeds the HistoryEvent version of its time; the event's own encoding
in that version (what its hash was made from) is recovered from the record's bytes.
"""

from __future__ import annotations

import io
import json
import os
import struct
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.repository import AbstractSchemaRepository, SchemaRepositoryError
from fastavro.schema import expand_schema, fingerprint, load_schema, parse_schema, to_parsing_canonical_form

from . import avro_reader, avro_writer

__all__ = [
    "MAGIC",
    "DecodeError",
    "Schemas",
    "decode",
    "encode",
    "fingerprint_of",
    "header",
    "history_event_encoding",
    "schemas",
    "schemas_dir",
    "string",
]

MAGIC = b"\xc3\x01"
_HEADER = struct.Struct("<2sQ")
NAMESPACE = "kadence"


class DecodeError(ValueError):
    """A byte string is not a record Kadence can read; the reason says why."""


def schemas_dir() -> Path:
    """Where the ``.avsc`` files live: ``schemas/`` inside the installed package (the wheel
    puts them there), else the repository's ``schemas/`` beside it (an editable install)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "schemas", here.parent / "schemas"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("the Avro schemas directory (schemas/) was not found")


def fingerprint_of(parsed: Any) -> int:
    """The CRC-64-AVRO fingerprint of a parsed schema, as an unsigned int."""
    return int(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"), 16)


@dataclass(frozen=True)
class _Version:
    name: str
    writer: Any
    fingerprint: int


_HISTORY_EVENT = f"{NAMESPACE}.HistoryEvent"
_HISTORY_RECORD = f"{NAMESPACE}.HistoryRecord"


@dataclass(frozen=True)
class _Carried:
    """How a HistoryRecord version carries its event: after ``leading`` strings, the body
    of the HistoryEvent version whose fingerprint is ``fingerprint``."""

    leading: int
    fingerprint: int


# KADENCE_AVRO_CODEC=fastavro writes and reads every record with fastavro alone (the compiled
# writer and reader, avro_writer.py and avro_reader.py, are then never used): a switch to
# rule the accelerators out.
CODEC_ENV = "KADENCE_AVRO_CODEC"


def compiled_codec_enabled() -> bool:
    """Whether records are written and read by the compiled codec (the default) or by fastavro."""
    return os.environ.get(CODEC_ENV, "compiled").strip().lower() != "fastavro"


class Schemas:
    """The current schema of each record type and every version ever written."""

    def __init__(self, directory: Path, *, compiled: bool | None = None) -> None:
        self.compiled = compiled_codec_enabled() if compiled is None else compiled
        self._writers: dict[str, avro_writer.Writer] = {}  # by full name, compiled on first use
        self._readers: dict[int, avro_reader.Reader | None] = {}  # by fingerprint; None: fastavro's
        self.current: dict[str, Any] = {}
        self._fingerprint: dict[str, int] = {}
        self._by_fingerprint: dict[int, _Version] = {}
        self._resolved: dict[int, tuple[Any, Any]] = {}
        self._carried: dict[int, _Carried] = {}  # by HistoryRecord fingerprint
        for path in sorted(directory.glob(f"{NAMESPACE}.*.avsc")):
            parsed: Any = load_schema(str(path))
            name = parsed["name"]
            self.current[name] = parsed
            fp = fingerprint_of(parsed)
            self._fingerprint[name] = fp
            self._by_fingerprint[fp] = _Version(name, parsed, fp)
        versions = directory / "versions"
        if versions.is_dir():
            for path in sorted(versions.glob("*.avsc")):
                parsed = self._load_version(path, directory)
                fp = fingerprint_of(parsed)
                self._by_fingerprint.setdefault(fp, _Version(parsed["name"], parsed, fp))
        for version in list(self._by_fingerprint.values()):
            if version.name == _HISTORY_RECORD:
                self._carry(version)

    def _carry(self, record: _Version) -> None:
        """Learn which HistoryEvent version a HistoryRecord version embeds.

        A record's event was hashed as a standalone HistoryEvent of the same version, so
        the event's own fingerprint is taken from the record's schema rather than looked
        up by name: that also registers an event version that was never saved apart.
        """
        fields = record.writer["fields"]
        *leading, event = fields
        if (event["name"] != "event" or not isinstance(event["type"], dict)
                or any(f["type"] != "string" for f in leading)):
            # The history service writes a record as its strings then the event's body
            # (Transition.close); a schema of another shape breaks that, so fail at once.
            raise ValueError(f"{record.name} {record.fingerprint:016x} is not strings followed by the event")
        # Parsed again on its own, as a standalone schema is, so that it can be a writer.
        schema = parse_schema(event["type"])
        fp = fingerprint_of(schema)
        self._carried[record.fingerprint] = _Carried(len(leading), fp)
        self._by_fingerprint.setdefault(fp, _Version(_HISTORY_EVENT, schema, fp))

    @staticmethod
    def _load_version(path: Path, directory: Path) -> Any:
        # An old version refers to named types that live beside the current schemas:
        # load it as if it stood there, so its named types are inlined exactly as a
        # writer holding the full schema inlines them (and the fingerprint agrees).
        return load_schema(_VERSION_KEY, repo=_VersionRepository(path, directory))

    def _resolution(self, version: _Version) -> tuple[Any, Any]:
        """(writer, reader) for fastavro: the reader is None when the writer is current."""
        pair = self._resolved.get(version.fingerprint)
        if pair is None:
            current = self.current.get(version.name)
            if current is None or current is version.writer:
                pair = (version.writer, None)
            else:
                # Schema resolution needs both sides with their named types inlined.
                pair = (expand_schema(version.writer), expand_schema(current))
            self._resolved[version.fingerprint] = pair
        return pair

    def fingerprint(self, name: str) -> int:
        return self._fingerprint[_full(name)]

    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        full = _full(name)
        try:
            schema = self.current[full]
        except KeyError:
            raise KeyError(f"no Avro schema named {full}") from None
        hint = _BRANCH_HINTS.get(full)
        if hint is not None:
            record = hint(record)
        if self.compiled:
            writer = self._writers.get(full)
            if writer is None:
                writer = self._writers[full] = self._compile(schema)
            data = bytearray(_HEADER.pack(MAGIC, self._fingerprint[full]))
            try:
                writer(data, record)
                return bytes(data)
            except Exception:  # noqa: BLE001 - fastavro writes it, or raises what it always raised
                pass
        out = io.BytesIO()
        out.write(_HEADER.pack(MAGIC, self._fingerprint[full]))
        fastavro.schemaless_writer(out, schema, record)
        return out.getvalue()

    def _compile_reader(self, version: _Version) -> avro_reader.Reader | None:
        """The compiled reader of a current version's records; None for an older version
        (fastavro resolves it to the current schema) or a record it does not support."""
        writer, reader = self._resolution(version)
        if reader is not None or not isinstance(writer, dict) or writer.get("type") != "record":
            return None
        named: dict[str, Any] = {}
        parse_schema(writer, named)
        try:
            return avro_reader.compile_reader(writer, named)
        except ValueError:
            return None

    @staticmethod
    def _compile(schema: Any) -> avro_writer.Writer:
        named: dict[str, Any] = {}
        parse_schema(schema, named)
        return avro_writer.compile_writer(schema, named)

    def header(self, name: str) -> bytes:
        """The 10-byte single-object header of the named record type."""
        return _HEADER.pack(MAGIC, self._fingerprint[_full(name)])

    def _version(self, data: bytes) -> _Version:
        if len(data) < _HEADER.size:
            raise DecodeError(f"record of {len(data)} bytes is shorter than the 10-byte header")
        magic, fp = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise DecodeError(f"not Avro single-object encoding (marker {magic.hex()}, expected c301)")
        version = self._by_fingerprint.get(fp)
        if version is None:
            raise DecodeError(f"unknown schema fingerprint {fp:016x}")
        return version

    def field_names(self, data: bytes) -> tuple[str, ...]:
        """The top-level field names of the schema that wrote ``data``, in order."""
        return tuple(f["name"] for f in self._version(data).writer.get("fields", ()))

    def history_event_encoding(self, data: bytes) -> bytes:
        """The HistoryEvent in a HistoryEvent or HistoryRecord encoding, single-object
        encoded in the version its writer used: the bytes the event's hash was made from
        (with the hash in place). A HistoryEvent is returned as it is."""
        version = self._version(data)
        if version.name == _HISTORY_EVENT:
            return data
        carried = self._carried.get(version.fingerprint)
        if carried is None:
            raise DecodeError(f"a {version.name} carries no HistoryEvent")
        offset = _HEADER.size
        for _ in range(carried.leading):
            offset = _skip_string(data, offset)
        return _HEADER.pack(MAGIC, carried.fingerprint) + data[offset:]

    def writer(self, data: bytes) -> tuple[str, Any]:
        """The full name and the writer schema of single-object encoded bytes, from the
        header alone (for a reader that walks the body itself)."""
        version = self._version(data)
        return version.name, version.writer

    def name_of(self, data: bytes) -> str:
        """The short record name of single-object encoded bytes, from the header alone."""
        return self._version(data).name.rpartition(".")[2]

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """Return (short record name, record) for single-object encoded bytes."""
        version = self._version(data)
        if self.compiled:
            compiled = self._readers.get(version.fingerprint, _UNSET)
            if compiled is _UNSET:
                compiled = self._readers[version.fingerprint] = self._compile_reader(version)
            if compiled is not None:
                try:
                    value, end = compiled(data, _HEADER.size)
                except Exception:  # noqa: BLE001 - fastavro reads it, or refuses it as it always did
                    pass
                else:
                    if end == len(data):
                        return version.name.rpartition(".")[2], value
        writer, reader = self._resolution(version)
        body = io.BytesIO(data[_HEADER.size :])
        # A union of records is read by the branch index the writer wrote, so the value comes
        # back as the branch's record itself: nothing needs the branch's name.
        try:
            record: Any = fastavro.schemaless_reader(body, writer, reader)
        except (EOFError, ValueError, TypeError, IndexError, KeyError, UnicodeDecodeError) as exc:
            raise DecodeError(f"body does not match {version.name}: {exc!r}") from exc
        if body.tell() != len(data) - _HEADER.size:
            raise DecodeError(f"{len(data) - _HEADER.size - body.tell()} trailing bytes after a {version.name}")
        if not isinstance(record, dict):
            raise DecodeError(f"a {version.name} is not a record")
        return version.name.rpartition(".")[2], record


_VERSION_KEY = "__kadence_version__"
_UNSET: Any = object()


class _VersionRepository(AbstractSchemaRepository):
    def __init__(self, version: Path, directory: Path) -> None:
        self.version = version
        self.directory = directory

    def load(self, name: str) -> Any:
        path = self.version if name == _VERSION_KEY else self.directory / f"{name}.avsc"
        try:
            return json.loads(path.read_text())
        except OSError as exc:
            raise SchemaRepositoryError(f"schema {name} not found beside {self.version.name}") from exc


def string(value: str) -> bytes:
    """The Avro binary encoding of a string: zig-zag varint length, then UTF-8 bytes."""
    data = value.encode()
    n = len(data) << 1  # zig-zag of a non-negative length
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out) + data


def _skip_string(data: bytes, offset: int) -> int:
    """The offset just past the Avro string at ``offset``."""
    n = shift = 0
    while True:
        if offset >= len(data):
            raise DecodeError("a string's length runs past the end of the record")
        byte = data[offset]
        offset += 1
        n |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    length = (n >> 1) ^ -(n & 1)  # zig-zag
    if length < 0 or offset + length > len(data):
        raise DecodeError(f"a string of length {length} does not fit the record")
    return offset + length


def header(name: str) -> bytes:
    """The single-object header (marker and fingerprint) of the named record type."""
    return schemas().header(name)


def _full(name: str) -> str:
    return name if "." in name else f"{NAMESPACE}.{name}"


def _event_branch(event: dict[str, Any]) -> dict[str, Any]:
    attributes = event.get("attributes")
    if not isinstance(attributes, dict):
        return event
    return {**event, "attributes": (event_attributes_type(str(event.get("event_type"))), attributes)}


def _command_branch(command: Any) -> Any:
    if not isinstance(command, dict) or not isinstance(command.get("attributes"), dict):
        return command
    return {**command, "attributes": (command_attributes_type(str(command.get("command_type"))),
                                      command["attributes"])}


def _commands_branch(record: dict[str, Any]) -> dict[str, Any]:
    commands = record.get("commands")
    if not isinstance(commands, list):
        return record
    return {**record, "commands": [_command_branch(c) for c in commands]}


def _run_ahead_branch(record: dict[str, Any]) -> dict[str, Any]:
    # The commands of a workflow task run ahead: a command whose attributes all have
    # defaults (CancelWorkflowExecution) would otherwise be written as another such branch.
    # The task itself is named too: fastavro would otherwise try it against the union's
    # branches, validating it and its commands, before it finds the one it is.
    task = record.get("workflow_task")
    return {**record, "workflow_task": (f"{NAMESPACE}.RunAheadWorkflowTask", _commands_branch(task))} if isinstance(
        task, dict) else record


def _timer_ahead_branch(record: dict[str, Any]) -> dict[str, Any]:
    # A task run ahead on a timer's firing: the task is no union, its commands are.
    task = record.get("workflow_task")
    return {**record, "workflow_task": _commands_branch(task)} if isinstance(task, dict) else record


def _history_record_branch(record: dict[str, Any]) -> dict[str, Any]:
    event = record.get("event")
    return {**record, "event": _event_branch(event)} if isinstance(event, dict) else record


# The records holding a union of many attribute records. Their sibling
# ``event_type``/``command_type`` names the branch, so the writer is told it
# (fastavro's ``(name, value)`` form) instead of trying every branch in turn,
# which costs about three times the rest of the encoding.
_BRANCH_HINTS = {
    f"{NAMESPACE}.HistoryEvent": _event_branch,
    f"{NAMESPACE}.HistoryRecord": _history_record_branch,
    f"{NAMESPACE}.Command": _command_branch,
    f"{NAMESPACE}.RespondWorkflowTaskCompleted": _commands_branch,
    f"{NAMESPACE}.RespondActivityTaskCompleted": _run_ahead_branch,
    f"{NAMESPACE}.RespondTimerRunAhead": _timer_ahead_branch,
}


def event_attributes_type(event_type: str) -> str:
    return f"{NAMESPACE}.{event_type}EventAttributes"


def command_attributes_type(command_type: str) -> str:
    return f"{NAMESPACE}.{command_type}CommandAttributes"


def tag_unions(name: str, record: dict[str, Any]) -> dict[str, Any]:
    """Mark the union branch of ``attributes`` fields so fastavro writes the right record
    (:meth:`Schemas.encode` does it itself; this is for writing with fastavro directly)."""
    hint = _BRANCH_HINTS.get(_full(name))
    return record if hint is None else hint(record)


@cache
def schemas() -> Schemas:
    """The process-wide schema set, loaded once from ``schemas/``."""
    return Schemas(schemas_dir())


def encode(name: str, record: dict[str, Any]) -> bytes:
    """Encode ``record`` as the named record type (short or full name)."""
    return schemas().encode(name, record)


def decode(data: bytes) -> tuple[str, dict[str, Any]]:
    """Decode single-object encoded bytes into (short record name, record)."""
    return schemas().decode(data)


def history_event_encoding(data: bytes) -> bytes:
    """The HistoryEvent of a HistoryEvent or HistoryRecord, encoded as its writer encoded it."""
    return schemas().history_event_encoding(data)
