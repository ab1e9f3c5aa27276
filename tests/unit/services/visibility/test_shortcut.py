"""The visibility projection's decode shortcut: what it returns folds to the same update as
the full decode, for every event kind of every HistoryRecord version, and it never leaves
out the attributes of a kind the fold reads (that list is derived from the fold itself)."""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pytest

from kadence_protocol import avro
from kadence_protocol.enums import EventType, RunStatus
from kadence_protocol.markers import SEARCH_ATTRIBUTES_MARKER
from services.visibility import projection, shortcut

pytestmark = pytest.mark.timeout(30)


def _example(schema: Any, named: dict[str, Any], depth: int = 0) -> Any:
    """A value of ``schema`` with every optional part present (down to a small depth), so
    that the bytes the shortcut does not read are there to be skipped."""
    if isinstance(schema, list):
        branches = [b for b in schema if b != "null"]
        return None if not branches or depth > 3 else _example(branches[0], named, depth + 1)
    if isinstance(schema, str):
        if schema in named:
            return _example(named[schema], named, depth + 1)
        return {"null": None, "boolean": True, "int": 7, "long": 1_700_000_000_123, "float": 1.5, "double": 2.5,
                "bytes": b"\x00\xffpayload", "string": "x" * 40}[schema]
    kind = schema["type"]
    if kind == "record":
        named[schema["name"]] = schema
        return {f["name"]: _example(f["type"], named, depth + 1) for f in schema["fields"]}
    if kind == "enum":
        named[schema["name"]] = schema
        return schema["symbols"][0]
    if kind == "array":
        return [_example(schema["items"], named, depth + 1)]
    if kind == "map":
        return {"k": _example(schema["values"], named, depth + 1)}
    if kind == "fixed":
        named[schema["name"]] = schema
        return b"\x01" * schema["size"]
    return _example(kind, named, depth)


def _named(schema: Any, named: dict[str, Any]) -> dict[str, Any]:
    """Every named type defined in ``schema`` (every union branch too), by full name."""
    if isinstance(schema, list):
        for branch in schema:
            _named(branch, named)
    elif isinstance(schema, dict):
        if schema.get("type") in ("record", "enum", "fixed"):
            named[schema["name"]] = schema
        for field in schema.get("fields", ()):
            _named(field["type"], named)
        for key in ("items", "values"):
            if key in schema:
                _named(schema[key], named)
    return named


def _record_versions() -> list[Any]:
    """Every HistoryRecord schema ever written: the current one and those under versions/."""
    here = avro.schemas_dir()
    old = [avro.Schemas._load_version(path, here) for path in sorted((here / "versions").glob("kadence.HistoryRecord.v*.avsc"))]
    return [avro.schemas().current["kadence.HistoryRecord"], *old]


def _encoded(writer: Any, kind: str, event_id: int = 3, attributes: dict[str, Any] | None = None) -> bytes:
    """A HistoryRecord of ``kind`` written with ``writer`` (fastavro, not the current code path)."""
    named = _named(writer, {})
    record = _example(writer, named)
    branch = avro.event_attributes_type(kind)
    if attributes is None:
        attributes = _example(named[branch], named)
    record.update(namespace="default", workflow_id="wf-é", run_id="run-1")
    record["event"].update(event_id=event_id, event_time=1_700_000_000_000 + event_id, event_type=kind,
                           attributes=attributes)
    out = io.BytesIO()
    fastavro.schemaless_writer(out, writer, avro.tag_unions("HistoryRecord", record))
    return avro.MAGIC + avro.fingerprint_of(writer).to_bytes(8, "little") + out.getvalue()


def _kinds(writer: Any) -> list[str]:
    event = writer["fields"][3]["type"]
    return list(next(f for f in event["fields"] if f["name"] == "event_type")["type"]["symbols"])


CASES = [(version, kind) for version, writer in enumerate(_record_versions()) for kind in _kinds(writer)]


@pytest.mark.parametrize(("version", "kind"), CASES)
def test_every_kind_of_every_version_folds_as_the_full_decode_does(version: int, kind: str) -> None:
    value = _encoded(_record_versions()[version], kind)
    full, short = projection.decode(value), shortcut.decode(value)
    assert projection.fold([short]) == projection.fold([full])
    if kind in projection.ATTRIBUTE_EVENTS:
        assert short == full  # decoded in full: its attributes are read
    else:
        assert short["event"]["attributes"] is None
        assert {k: v for k, v in short.items() if k != "event"} == {k: v for k, v in full.items() if k != "event"}


class _Watched(dict[str, Any]):
    """An event that remembers whether the fold read its attributes."""

    read_attributes = False

    def __getitem__(self, key: str) -> Any:
        if key == "attributes":
            self.read_attributes = True
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        if key == "attributes":
            self.read_attributes = True
        return super().get(key, default)


@pytest.mark.parametrize("kind", [e.value for e in EventType])
def test_a_kind_whose_attributes_the_fold_reads_is_never_shortcut(kind: str) -> None:
    # The list the shortcut goes by comes from the fold's own table; this checks the fold
    # reads no other kind's attributes, whatever its code becomes.
    event = _Watched(event_id=2, event_time=1002, event_type=kind, attributes={})
    projection.RunUpdate("default", "wf", "run", last_event_id=1, newest_event_time=1001).take(event)
    assert not event.read_attributes or kind in projection.ATTRIBUTE_EVENTS
    assert shortcut.ShortcutDecoder()._attribute_events == projection.ATTRIBUTE_EVENTS


def test_a_run_of_starts_upserts_and_closes_folds_the_same_either_way() -> None:
    writer = _record_versions()[0]
    named = _named(writer, {})
    start = _example(named["kadence.WorkflowExecutionStartedEventAttributes"], named)
    start.update(workflow_type="Order", task_queue="q", search_attributes='{"Stage": "new", "Priority": 1}',
                 memo='{"note": "hi"}', parent_workflow_id=None, parent_run_id=None)
    marker = _example(named["kadence.MarkerRecordedEventAttributes"], named)
    values = [
        _encoded(writer, "WorkflowExecutionStarted", 1, start),
        _encoded(writer, "WorkflowTaskScheduled", 2),
        _encoded(writer, "MarkerRecorded", 3, {**marker, "marker_name": SEARCH_ATTRIBUTES_MARKER,
                                               "details": '{"Stage": "paid"}'}),
        _encoded(writer, "ActivityTaskCompleted", 4),
        _encoded(writer, "WorkflowExecutionCompleted", 5),
    ]
    [update] = projection.fold([shortcut.decode(v) for v in values])
    assert update == projection.fold([projection.decode(v) for v in values])[0]
    assert (update.workflow_type, update.status, update.last_event_id, update.close_time) == (
        "Order", RunStatus.COMPLETED, 5, 1_700_000_000_005)
    assert update.search_attributes == {"Stage": "paid", "Priority": 1} and update.memo == {"note": "hi"}


def test_what_the_full_decode_skips_the_shortcut_skips() -> None:
    writer = _record_versions()[0]
    whole = _encoded(writer, "TimerFired")
    dead_letter = avro.encode("DeadLetter", {"source_topic": "t", "partition": 0, "offset": 0, "key": None,
                                             "value": b"", "reason": "r", "failed_at": 0})
    unknown = avro.MAGIC + b"\x00" * 8 + whole[10:]
    for bad, reason in ((None, "no value"), (b"\x00junk", "unreadable"), (b"\xc3", "unreadable"),
                        (dead_letter, "DeadLetter"), (unknown, "unknown schema"),
                        (whole[:14], "unreadable"), (whole[:10] + b"\x7f", "unreadable")):
        with pytest.raises(projection.Skipped, match=reason):
            shortcut.decode(bad)


def test_a_head_that_reads_is_folded_though_the_rest_is_cut_off() -> None:
    # The documented trade: the bytes past an event's type are not read for these kinds.
    value = _encoded(_record_versions()[0], "TimerFired", 9)
    with pytest.raises(projection.Skipped):
        projection.decode(value[:-3])
    assert shortcut.decode(value[:-3])["event"] == {"event_id": 9, "event_time": 1_700_000_000_009,
                                                    "event_type": "TimerFired", "attributes": None}



def test_only_known_writers_are_remembered() -> None:
    # Any bytes may come from the topic: an unknown fingerprint must not grow the decoder.
    decoder = shortcut.ShortcutDecoder()
    whole = _encoded(_record_versions()[0], "TimerFired")
    for n in range(50):
        with pytest.raises(projection.Skipped, match="unknown schema"):
            decoder(avro.MAGIC + n.to_bytes(8, "little") + whole[10:])
    decoder(whole)
    assert len(decoder._symbols) == 1


@pytest.mark.parametrize(("version", "kind"), CASES)
def test_the_fold_from_bytes_is_the_fold_of_the_full_decode(version: int, kind: str) -> None:
    value = _encoded(_record_versions()[version], kind)
    assert shortcut.ShortcutDecoder().fold([value]) == projection.fold([projection.decode(value)])


def _two_runs_and_two_unreadable() -> list[bytes | None]:
    """Records of two runs, the start of one and a search-attribute marker among them, with
    two the full decode skips (at indices 2 and 4)."""
    writer = _record_versions()[0]
    named = _named(writer, {})
    start = _example(named["kadence.WorkflowExecutionStartedEventAttributes"], named)
    start.update(workflow_type="Order", task_queue="q", search_attributes='{"Stage": "new"}', memo=None,
                 parent_workflow_id=None, parent_run_id=None)
    marker = _example(named["kadence.MarkerRecordedEventAttributes"], named)

    def other_run(value: bytes) -> bytes:
        return value.replace(avro.string("run-1"), avro.string("run-2"))

    values: list[bytes | None] = [
        _encoded(writer, "WorkflowTaskScheduled", 2),  # a run whose start came in an earlier fetch
        other_run(_encoded(writer, "WorkflowExecutionStarted", 1, start)),
        None,
        _encoded(writer, "MarkerRecorded", 3, {**marker, "marker_name": SEARCH_ATTRIBUTES_MARKER,
                                               "details": '{"Stage": "paid"}'}),
        b"\x00junk",
        other_run(_encoded(writer, "WorkflowExecutionFailed", 2)),
        _encoded(writer, "TimerFired", 4),
    ]
    return values


def test_the_fold_from_bytes_groups_runs_and_reports_what_it_skips() -> None:
    values = _two_runs_and_two_unreadable()
    skipped: list[int] = []
    folded = shortcut.ShortcutDecoder().fold(values, lambda index, exc: skipped.append(index))
    assert skipped == [2, 4]
    assert folded == projection.fold([projection.decode(v) for v in values if v not in (None, b"\x00junk")])
    assert [(u.run_id, u.last_event_id, u.status) for u in folded] == [
        ("run-1", 4, None), ("run-2", 2, RunStatus.FAILED)]
    assert folded[0].search_attributes == {"Stage": "paid"} and folded[1].search_attributes == {"Stage": "new"}


@pytest.mark.parametrize("size", [1, 2, 3, 6])
def test_a_batch_folded_a_slice_at_a_time_folds_as_at_once(size: int) -> None:
    values = _two_runs_and_two_unreadable()
    decoder = shortcut.ShortcutDecoder()
    skipped: list[int] = []
    updates: dict[bytes, projection.RunUpdate] = {}
    for first in range(0, len(values), size):
        folded = decoder.fold(values[first:first + size], lambda index, exc: skipped.append(index),
                              into=updates, first=first)
    assert skipped == [2, 4]
    assert folded == list(updates.values()) == shortcut.ShortcutDecoder().fold(values)


@pytest.mark.parametrize("event_time", [0, 1, 63, 64, 2**34, 2**41 - 1, 2**41, 1_700_000_000_123, 2**47 - 1, 2**47,
                                        2**62, -1, -(2**41)])
def test_event_times_of_every_length_read_as_the_full_decode_reads_them(event_time: int) -> None:
    record = projection.decode(_encoded(_record_versions()[0], "TimerFired", 5))
    record["event"]["event_time"] = event_time
    value = avro.encode("HistoryRecord", record)
    assert shortcut.decode(value)["event"]["event_time"] == projection.decode(value)["event"]["event_time"] == event_time
    assert shortcut.ShortcutDecoder().fold([value]) == projection.fold([projection.decode(value)])
