"""The schema walk shared by the compiled reader and writer (kadence_protocol/avro_compile.py)."""

from __future__ import annotations

from typing import Any

import fastavro
import pytest

from kadence_protocol.avro_reader import compile_reader
from kadence_protocol.avro_writer import compile_writer

pytestmark = pytest.mark.timeout(30)

NODE = {"type": "record", "name": "Node", "fields": [
    {"name": "value", "type": "long"},
    {"name": "next", "type": ["null", "Node"], "default": None},
]}


def _parsed(schema: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    named: dict[str, Any] = {}
    return fastavro.parse_schema(schema, named_schemas=named), named


def test_a_record_that_names_itself_round_trips_through_both_sides() -> None:
    schema, named = _parsed(NODE)
    value = {"value": 1, "next": {"value": -2, "next": {"value": 3, "next": None}}}
    out = bytearray()
    compile_writer(schema, named)(out, value)
    decoded, end = compile_reader(schema, named)(bytes(out), 0)
    assert (decoded, end) == (value, len(out))


@pytest.mark.parametrize("compile_", [compile_reader, compile_writer])
def test_an_unknown_named_type_and_a_fixed_are_refused_by_name(compile_: Any) -> None:
    with pytest.raises(ValueError, match="unknown named type Missing"):
        compile_("Missing", {})
    fixed, named = _parsed({"type": "fixed", "name": "Hash", "size": 4})
    with pytest.raises(ValueError, match="does not support fixed Hash"):
        compile_(fixed, named)
