"""Avro single-object encoding: header, fingerprints, errors, and the schemas themselves."""

from __future__ import annotations

import json
import struct

import avro.errors
import avro.schema
import pytest

from kadence_protocol import avro as codec

pytestmark = pytest.mark.timeout(10)


def test_round_trip_and_header() -> None:
    record = {"namespace": "ns", "workflow_id": "w", "signal_name": "go", "input": "[1]", "run_id": None}
    data = codec.encode("SignalWorkflowExecution", record)
    assert data[:2] == b"\xc3\x01"
    (fp,) = struct.unpack_from("<Q", data, 2)
    assert fp == codec.schemas().fingerprint("SignalWorkflowExecution")
    name, back = codec.decode(data)
    assert name == "SignalWorkflowExecution"
    assert back["signal_name"] == "go" and back["request_id"] == "" and back["reply_to"] is None


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "shorter than"),
    (b"\x00\x01" + bytes(8) + b"x", "not Avro single-object"),
    (b"\xc3\x01" + bytes(8), "unknown schema fingerprint"),
])
def test_undecodable_bytes_say_why(data: bytes, reason: str) -> None:
    with pytest.raises(codec.DecodeError, match=reason):
        codec.decode(data)


def test_truncated_body_is_refused() -> None:
    data = codec.encode("Reply", {"reply_to": "a", "request_id": "b", "ok": True})
    with pytest.raises(codec.DecodeError):
        codec.decode(data[:-3])


def test_every_schema_file_is_valid_avro() -> None:
    names = {}
    for path in sorted(codec.schemas_dir().glob("kadence.*.avsc")):
        raw = json.loads(path.read_text())
        names[raw["name"]] = path
    # The reference implementation parses each schema with its dependencies resolved.
    known = avro.schema.Names()
    pending = dict(names)
    while pending:
        progressed = False
        for name, path in list(pending.items()):
            before = dict(known.names)
            try:
                avro.schema.make_avsc_object(json.loads(path.read_text()), known)
            except avro.errors.SchemaParseException:
                known.names = before  # a half-parsed schema may have registered nested names
                continue
            del pending[name]
            progressed = True
        assert progressed, f"unresolvable schemas: {sorted(pending)}"


def test_event_and_command_unions_cover_every_attributes_record() -> None:
    current = codec.schemas().current
    event_types = current["kadence.HistoryEvent"]["fields"][2]["type"]["symbols"]
    for event_type in event_types:
        assert codec.event_attributes_type(event_type) in current
    command_types = current["kadence.Command"]["fields"][0]["type"]["symbols"]
    for command_type in command_types:
        assert codec.command_attributes_type(command_type) in current
