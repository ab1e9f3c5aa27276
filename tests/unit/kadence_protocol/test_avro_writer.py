"""The compiled Avro writer writes the bytes fastavro writes, for every record type, and
hands whatever it does not take back to fastavro (same bytes, same errors)."""

from __future__ import annotations

import functools
import io
import random
from collections.abc import Callable
from typing import Any

import fastavro
import pytest
from fastavro.schema import parse_schema
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kadence_protocol import avro
from kadence_protocol.avro_writer import Unsupported, compile_writer

pytestmark = pytest.mark.timeout(60)

_NAMED = ("record", "error", "enum", "fixed")


def _value(schema: Any, named: dict[str, Any], rng: random.Random, depth: int = 0,
           long: Callable[[], int] | None = None) -> Any:
    """A random value of ``schema``, unions written in tuple notation or (when nullable
    with one other branch) plainly, as Kadence's records are; ``long`` gives each long's
    value when set."""
    if isinstance(schema, str):
        if schema in named:
            return _value(named[schema], named, rng, depth, long)
        return _primitive(schema, rng, long)
    if isinstance(schema, list):
        branch = rng.choice(schema)
        value = _value(branch, named, rng, depth + 1, long)
        if value is None:
            return None
        others = [b for b in schema if b != "null"]
        if len(schema) == 2 and "null" in schema and rng.random() < 0.5:
            return value
        if len(others) == 1 and "null" in schema and len(schema) == 2:
            return value
        name = branch if isinstance(branch, str) else (branch["name"] if branch["type"] in _NAMED else branch["type"])
        return (name, value)
    kind = schema["type"]
    if kind in ("record", "error"):
        return {f["name"]: _value(f["type"], named, rng, depth + 1, long) for f in schema["fields"]
                if "default" not in f or rng.random() < 0.7}
    if kind == "enum":
        return rng.choice(schema["symbols"])
    if kind == "array":
        return [_value(schema["items"], named, rng, depth + 1, long)
                for _ in range(0 if depth > 3 else rng.randrange(4))]
    if kind == "map":
        return {f"k{i}": _value(schema["values"], named, rng, depth + 1, long) for i in range(rng.randrange(3))}
    return _primitive(kind, rng, long)


def _primitive(kind: str, rng: random.Random, long: Callable[[], int] | None = None) -> Any:
    if kind == "null":
        return None
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "int":
        return rng.choice([0, 1, -1, 63, 64, -65, 2**31 - 1, -(2**31), rng.randrange(-(2**31), 2**31)])
    if kind == "long":
        if long is not None:
            return long()
        return rng.choice([0, 1, -1, 63, -64, 64, 2**63 - 1, -(2**63), 1765000000000, rng.randrange(-(2**63), 2**63)])
    if kind == "double":
        return rng.choice([0.0, -1.5, 2.0, 1e300, rng.random()])
    if kind == "bytes":
        return rng.randbytes(rng.randrange(0, 200))
    if kind == "string":
        return rng.choice(["", "a", "é☃𝄞", "x" * 200, str(rng.random())])
    raise AssertionError(kind)


def _fastavro(schema: Any, record: Any) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, record)
    return out.getvalue()


@pytest.mark.parametrize("name", sorted(avro.schemas().current))
def test_writes_what_fastavro_writes(name: str) -> None:
    schema = avro.schemas().current[name]
    named: dict[str, Any] = {}
    parse_schema(schema, named)
    write = compile_writer(schema, named)
    rng = random.Random(name)
    for _ in range(60):
        record = _value(schema, named, rng)
        out = bytearray()
        write(out, record)
        assert bytes(out) == _fastavro(schema, record)


def test_history_events_of_a_run_encode_as_before() -> None:
    compiled, plain = avro.Schemas(avro.schemas_dir(), compiled=True), avro.Schemas(avro.schemas_dir(), compiled=False)
    event = {"event_id": 7, "event_time": 1765000000000, "event_type": "ActivityTaskScheduled", "hash": "ab" * 32,
             "attributes": {"activity_id": "1", "activity_type": "echo", "task_queue": "q", "input": '"x"',
                            "schedule_to_close_timeout_ms": 0, "schedule_to_start_timeout_ms": 0,
                            "start_to_close_timeout_ms": 10_000, "heartbeat_timeout_ms": 0, "retry_policy": None,
                            "workflow_task_completed_event_id": 6}}
    assert compiled.encode("HistoryEvent", event) == plain.encode("HistoryEvent", event)
    assert compiled.decode(compiled.encode("HistoryEvent", event))[1] == event


@pytest.mark.parametrize("value", [True, 1.0, "1", 2**63, None])
def test_a_long_it_does_not_take_goes_to_fastavro(value: Any) -> None:
    schema = parse_schema({"type": "record", "name": "R", "fields": [{"name": "n", "type": "long"}]})
    with pytest.raises(Unsupported):
        compile_writer(schema, {})(bytearray(), {"n": value})


def test_unsupported_values_are_written_by_fastavro_or_refused_as_before() -> None:
    compiled, plain = avro.Schemas(avro.schemas_dir(), compiled=True), avro.Schemas(avro.schemas_dir(), compiled=False)
    # A bool where a long goes: fastavro writes it as 1; so does the fallback.
    record = {"namespace": "ns", "workflow_id": "w", "signal_name": "go", "input": None, "run_id": None,
              "request_id": True}
    with pytest.raises(Exception) as refused:
        plain.encode("SignalWorkflowExecution", record)
    with pytest.raises(type(refused.value)):
        compiled.encode("SignalWorkflowExecution", record)
    missing = {"namespace": "ns"}
    with pytest.raises(Exception) as first:
        plain.encode("SignalWorkflowExecution", missing)
    with pytest.raises(type(first.value)):
        compiled.encode("SignalWorkflowExecution", missing)


def test_switch_selects_fastavro(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(avro.CODEC_ENV, "fastavro")
    assert not avro.compiled_codec_enabled()
    assert not avro.Schemas(avro.schemas_dir()).compiled
    monkeypatch.delenv(avro.CODEC_ENV)
    assert avro.compiled_codec_enabled()


def test_str_enum_members_are_written_compiled() -> None:
    # History's events carry EventType members and its records RunStatus ones: the compiled
    # path must take them (a fallback for every event would undo the point of it).
    from kadence_protocol.enums import EventType

    schema = avro.schemas().current["kadence.HistoryEvent"]
    named: dict[str, Any] = {}
    parse_schema(schema, named)
    event = {"event_id": 3, "event_time": 5, "event_type": EventType.TIMER_FIRED, "hash": "",
             "attributes": ("kadence.TimerFiredEventAttributes", {"timer_id": "t", "started_event_id": 2})}
    out = bytearray()
    compile_writer(schema, named)(out, event)
    assert bytes(out) == _fastavro(schema, event)


# Where a varint gains a byte (zig-zag values 2**7k - 1 and 2**7k) and the ends of the range.
_LONG_EDGES = sorted({v for k in range(64) for v in (2**k - 1, 2**k, -(2**k), -(2**k) - 1)
                      if -(2**63) <= v < 2**63})
_LONGS = st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from(_LONG_EDGES),
                   st.integers(1_600_000_000_000, 2_500_000_000_000),  # millisecond times
                   st.integers(-(2**20), 2**20))
_LONG_RECORD = parse_schema({"type": "record", "name": "Longs", "fields": [
    {"name": "n", "type": "long"}, {"name": "maybe", "type": ["null", "long"]},
    {"name": "all", "type": {"type": "array", "items": "long"}},
    {"name": "by", "type": {"type": "map", "values": "long"}}]})


@settings(max_examples=400, deadline=None)
@given(n=_LONGS)
@example(n=-(2**63)).via("the lowest long")
@example(n=2**63 - 1).via("the highest long")
def test_any_long_is_written_as_fastavro_writes_it(n: int) -> None:
    # Inline in a record's writer (a long field, a nullable one) and through _long_into
    # (an array's and a map's items, their block counts).
    record = {"n": n, "maybe": n, "all": [n, n], "by": {"k": n}}
    out = bytearray()
    compile_writer(_LONG_RECORD, {})(out, record)
    assert bytes(out) == _fastavro(_LONG_RECORD, record)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
@pytest.mark.parametrize("name", sorted(avro.schemas().current))
def test_every_record_with_any_longs_is_written_as_fastavro_writes_it(name: str, data: st.DataObject) -> None:
    schema = avro.schemas().current[name]
    named: dict[str, Any] = {}
    parse_schema(schema, named)
    rng = random.Random(data.draw(st.integers(0, 2**32), label="seed"))
    record = _value(schema, named, rng, long=lambda: data.draw(_LONGS))
    out = bytearray()
    compile_writer(schema, named)(out, record)
    assert bytes(out) == _fastavro(schema, record)


@settings(max_examples=100, deadline=None)
@given(event_time=_LONGS, event_id=_LONGS, timeout=_LONGS)
def test_a_history_event_with_any_times_is_written_as_fastavro_writes_it(event_time: int, event_id: int,
                                                                         timeout: int) -> None:
    # The event the chain's seal encodes most, with its times, ids and durations drawn.
    attributes = {"activity_id": "1", "activity_type": "echo", "task_queue": "q", "input": '"x"',
                  "schedule_to_close_timeout_ms": timeout, "schedule_to_start_timeout_ms": 0,
                  "start_to_close_timeout_ms": timeout, "heartbeat_timeout_ms": 0, "retry_policy": None,
                  "workflow_task_completed_event_id": event_id}
    event = {"event_id": event_id, "event_time": event_time, "event_type": "ActivityTaskScheduled", "hash": "",
             "attributes": ("kadence.ActivityTaskScheduledEventAttributes", attributes)}
    schema, write = _history_event_writer()
    out = bytearray()
    write(out, event)  # compiled, not handed back to fastavro
    assert bytes(out) == _fastavro(schema, event)


@functools.cache
def _history_event_writer() -> tuple[Any, Any]:
    schema = avro.schemas().current["kadence.HistoryEvent"]
    named: dict[str, Any] = {}
    parse_schema(schema, named)
    return schema, compile_writer(schema, named)
