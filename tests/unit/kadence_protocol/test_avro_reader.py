"""The compiled Avro reader reads what fastavro reads, for every record type, and leaves
every body it does not expect to fastavro (same value, same refusal)."""

from __future__ import annotations

import io
import random
from typing import Any

import fastavro
import pytest
from fastavro.schema import parse_schema

from kadence_protocol import avro
from kadence_protocol.avro_reader import Unreadable, compile_reader

from .test_avro_writer import _fastavro, _value

pytestmark = pytest.mark.timeout(60)


def _schemas(compiled: bool) -> avro.Schemas:
    return avro.Schemas(avro.schemas_dir(), compiled=compiled)


@pytest.mark.parametrize("name", sorted(avro.schemas().current))
def test_reads_what_fastavro_reads(name: str) -> None:
    schema = avro.schemas().current[name]
    named: dict[str, Any] = {}
    parse_schema(schema, named)
    read = compile_reader(schema, named)
    rng = random.Random(name)
    for _ in range(60):
        data = _fastavro(schema, _value(schema, named, rng))
        value, end = read(data, 0)
        assert end == len(data)
        assert value == fastavro.schemaless_reader(io.BytesIO(data), schema, None)


def _outcome(schemas: avro.Schemas, data: bytes) -> Any:
    try:
        return schemas.decode(data)
    except avro.DecodeError as exc:
        return ("refused", type(exc))


def test_damaged_bodies_are_refused_or_read_as_fastavro_does() -> None:
    compiled, plain = _schemas(True), _schemas(False)
    rng = random.Random(7)
    names = sorted(n for n in avro.schemas().current if avro.schemas().current[n]["type"] == "record")
    for _ in range(400):
        name = rng.choice(names)
        schema = avro.schemas().current[name]
        named: dict[str, Any] = {}
        parse_schema(schema, named)
        try:
            data = bytearray(plain.encode(name, _value(schema, named, rng)))
        except (ValueError, TypeError):
            continue
        cut = rng.randrange(10, len(data) + 1)
        damaged = [bytes(data[:cut]), bytes(data) + b"\x00"]
        if len(data) > 10:
            flipped = bytearray(data)
            flipped[rng.randrange(10, len(data))] ^= 1 << rng.randrange(8)
            damaged.append(bytes(flipped))
        for body in damaged:
            assert _outcome(compiled, body) == _outcome(plain, body)


@pytest.mark.parametrize("body", [b"\x04", b"\x02", b"\x80", b"\x01", b"\x06\x01"])
def test_bytes_it_does_not_expect_are_unreadable(body: bytes) -> None:
    # A union ["null", "boolean"] that is 1 of 1: index 2 is out, a boolean of 2 is not one,
    # a varint that never ends is truncated, a negative index is out.
    schema = parse_schema({"type": "record", "name": "R", "fields": [{"name": "b", "type": ["null", "boolean"]}]})
    with pytest.raises((Unreadable, IndexError)):
        compile_reader(schema, {})(body, 0)


def test_an_older_version_is_resolved_by_fastavro() -> None:
    compiled = _schemas(True)
    old = next(v for v in compiled._by_fingerprint.values()
               if v.name == "kadence.HistoryEvent" and v.writer is not compiled.current[v.name])
    assert compiled._compile_reader(old) is None


def test_switch_reads_with_fastavro() -> None:
    plain = _schemas(False)
    data = plain.encode("SignalWorkflowExecution", {"namespace": "ns", "workflow_id": "w", "signal_name": "go",
                                                    "input": None, "run_id": None})
    assert plain.decode(data) == _schemas(True).decode(data)
    assert plain._readers == {}
