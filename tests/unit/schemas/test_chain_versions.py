"""The hash chain across schema versions: a run sealed under an older HistoryEvent version
(in history_events rows and in kadence.history records of the HistoryRecord version of its
time) still verifies after the schema has moved on, and a changed, dropped or reordered
event of it still breaks the chain. No I/O beyond reading schemas/."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
import pytest

from kadence_protocol import avro
from services.common import chain
from services.history.audit import replay as r
from services.history.audit.stream import StreamAuditor

pytestmark = pytest.mark.timeout(10)
RUN = r.RunKey("default", "wf-old", "run-old")
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _load(file: str) -> Any:
    """A schema version of schemas/versions/ by file name, or the current schema by name."""
    here = avro.schemas_dir()
    if file.endswith(".avsc"):
        return avro.Schemas._load_version(here / "versions" / file, here)
    return avro.schemas().current[f"kadence.{file}"]


@dataclass(frozen=True)
class Writer:
    """The history service of one schema version: how it encoded, sealed and published
    an event then (fastavro with that version's schemas, not the current code path)."""

    event_schema: Any
    record_schema: Any | None  # None: no HistoryRecord carried this event version

    def encode(self, event: dict[str, Any]) -> bytes:
        return self._single_object(self.event_schema, "HistoryEvent", event)

    def seal(self, previous: str, event: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        """The event with its hash, and its row in history_events."""
        if not any(f["name"] == "hash" for f in self.event_schema["fields"]):
            return event, self.encode(event)  # version 1: no chain yet
        unhashed = self.encode({**event, "hash": ""})
        digest = hashlib.sha256(bytes.fromhex(previous) + unhashed).hexdigest()
        sealed = {**event, "hash": digest}
        return sealed, self.encode(sealed)

    def record(self, event: dict[str, Any]) -> bytes:
        """The event's kadence.history record."""
        assert self.record_schema is not None
        return self._single_object(self.record_schema, "HistoryRecord", {
            "namespace": RUN.namespace, "workflow_id": RUN.workflow_id, "run_id": RUN.run_id, "event": event})

    @staticmethod
    def _single_object(schema: Any, name: str, value: dict[str, Any]) -> bytes:
        out = io.BytesIO()
        fastavro.schemaless_writer(out, schema, avro.tag_unions(name, value))
        return b"\xc3\x01" + avro.fingerprint_of(schema).to_bytes(8, "little") + out.getvalue()


V1 = Writer(_load("kadence.HistoryEvent.v1.avsc"), None)
V2 = Writer(_load("kadence.HistoryEvent.v2.avsc"), _load("kadence.HistoryRecord.v1.avsc"))
V3 = Writer(_load("kadence.HistoryEvent.v3.avsc"), _load("kadence.HistoryRecord.v2.avsc"))
V5 = Writer(_load("kadence.HistoryEvent.v5.avsc"), _load("kadence.HistoryRecord.v4.avsc"))
V6 = Writer(_load("kadence.HistoryEvent.v6.avsc"), _load("kadence.HistoryRecord.v5.avsc"))
V7 = Writer(_load("kadence.HistoryEvent.v7.avsc"), _load("kadence.HistoryRecord.v6.avsc"))
V8 = Writer(_load("kadence.HistoryEvent.v8.avsc"), _load("kadence.HistoryRecord.v7.avsc"))
V9 = Writer(_load("kadence.HistoryEvent.v9.avsc"), _load("kadence.HistoryRecord.v8.avsc"))
V11 = Writer(_load("kadence.HistoryEvent.v11.avsc"), _load("kadence.HistoryRecord.v10.avsc"))
CURRENT = Writer(_load("HistoryEvent"), _load("HistoryRecord"))


def _bodies() -> list[tuple[str, dict[str, Any]]]:
    """A run with a workflow task, an activity (its started attributes changed in the
    current version) and a second workflow task, completed."""
    wt_started = {"identity": "w", "started_time": 1000}
    return [
        ("WorkflowExecutionStarted", {"workflow_type": "Pay", "task_queue": "q", "input": "[]",
                                      "execution_timeout_ms": 0, "workflow_task_timeout_ms": 10000,
                                      "request_id": "r1", "identity": "", "continued_execution_run_id": None,
                                      "attempt": 1}),
        ("WorkflowTaskScheduled", {"task_queue": "q", "start_to_close_timeout_ms": 10000, "attempt": 1}),
        ("WorkflowTaskStarted", {"scheduled_event_id": 2, **wt_started}),
        ("WorkflowTaskCompleted", {"scheduled_event_id": 2, "started_event_id": 3, "identity": "w"}),
        ("ActivityTaskScheduled", {"activity_id": "1", "activity_type": "Charge", "task_queue": "q",
                                   "input": "[]", "schedule_to_close_timeout_ms": 0,
                                   "schedule_to_start_timeout_ms": 0, "start_to_close_timeout_ms": 5000,
                                   "heartbeat_timeout_ms": 0, "retry_policy": None,
                                   "workflow_task_completed_event_id": 4}),
        ("ActivityTaskStarted", {"scheduled_event_id": 5, "attempt": 1, "identity": "w", "started_time": 1005}),
        ("ActivityTaskCompleted", {"scheduled_event_id": 5, "started_event_id": 6, "result": '"ok"',
                                   "identity": "w"}),
        ("WorkflowTaskScheduled", {"task_queue": "q", "start_to_close_timeout_ms": 10000, "attempt": 1}),
        ("WorkflowTaskStarted", {"scheduled_event_id": 8, **wt_started}),
        ("WorkflowTaskCompleted", {"scheduled_event_id": 8, "started_event_id": 9, "identity": "w"}),
        ("WorkflowExecutionCompleted", {"result": '"done"', "workflow_task_completed_event_id": 10}),
    ]


@dataclass(frozen=True)
class Written:
    """One run as its writers left it: history_events rows and kadence.history records."""

    rows: list[bytes]
    records: list[bytes]


def _write(writers: list[Writer]) -> Written:
    """Seal the run, event i by ``writers[i - 1]`` (a list of one writer: all events)."""
    rows, records, previous = [], [], ""
    for i, (kind, attributes) in enumerate(_bodies(), start=1):
        writer = writers[min(i, len(writers)) - 1]
        event = {"event_id": i, "event_time": 1000 + i, "event_type": kind, "attributes": attributes}
        sealed, row = writer.seal(previous, event)
        previous = sealed.get("hash", "")
        rows.append(row)
        if writer.record_schema is not None:
            records.append(writer.record(sealed))
    return Written(rows, records)


def _upgraded_midway() -> list[Writer]:
    """Events 1-4 under version 2, 5-6 under version 3, the rest under the current one."""
    return [V2] * 4 + [V3] * 2 + [CURRENT] * 5


def _topic(records: list[bytes]) -> r.Replay:
    replay = r.Replay()
    for data in records:
        replay.add_record(avro.decode(data)[1], data=data)
    replay.finish()
    return replay


def _kinds(divergences: list[r.Divergence]) -> list[tuple[str, int | None]]:
    return [(d.kind, d.event_id) for d in divergences]


def _tamper(data: bytes, old: bytes, new: bytes) -> bytes:
    assert data.count(old) == 1 and len(old) == len(new)
    return data.replace(old, new)


@pytest.mark.parametrize(("record", "event"), [
    ("kadence.HistoryRecord.v1.avsc", "kadence.HistoryEvent.v2.avsc"),
    ("kadence.HistoryRecord.v2.avsc", "kadence.HistoryEvent.v3.avsc"),
    ("kadence.HistoryRecord.v4.avsc", "kadence.HistoryEvent.v5.avsc"),
    ("kadence.HistoryRecord.v5.avsc", "kadence.HistoryEvent.v6.avsc"),
    ("kadence.HistoryRecord.v6.avsc", "kadence.HistoryEvent.v7.avsc"),
    ("kadence.HistoryRecord.v7.avsc", "kadence.HistoryEvent.v8.avsc"),
    ("kadence.HistoryRecord.v8.avsc", "kadence.HistoryEvent.v9.avsc"),
    ("HistoryRecord", "HistoryEvent"),
])
def test_a_history_record_carries_the_history_event_version_of_its_time(record: str, event: str) -> None:
    writer = Writer(_load(event), _load(record))
    sealed, row = writer.seal("", {"event_id": 1, "event_time": 7, "event_type": "MarkerRecorded",
                                   "attributes": {"marker_name": "m", "details": "é",
                                                  "workflow_task_completed_event_id": 0}})
    assert avro.history_event_encoding(writer.record(sealed)) == row
    assert avro.history_event_encoding(row) == row


def test_the_event_in_an_old_record_fixture_is_the_old_event_fixture() -> None:
    fixtures = {json.loads(line)["schema"]: bytes.fromhex(json.loads(line)["hex"])
                for line in (FIXTURES / "before_activity_started_time.jsonl").read_text().splitlines()}
    carried = avro.history_event_encoding(fixtures["kadence.HistoryRecord v2"])
    assert carried == fixtures["kadence.HistoryEvent v3"]


def test_unhashed_encoding_empties_the_trailing_hash_of_the_bytes_as_written() -> None:
    event = {"event_id": 1, "event_time": 7, "event_type": "MarkerRecorded",
             "attributes": {"marker_name": "m", "details": None, "workflow_task_completed_event_id": 0}}
    digest, encoded = chain.seal("", event)
    assert chain.unhashed_encoding(encoded, digest) == avro.encode("HistoryEvent", {**event, "hash": ""})
    assert chain.hash_of_encoded("", chain.unhashed_encoding(encoded, digest) or b"") == digest
    sealed, old = V3.seal("", event)
    assert chain.unhashed_encoding(old, sealed["hash"]) == V3.encode({**event, "hash": ""})
    assert chain.unhashed_encoding(V1.encode(event), "") is None  # version 1 had no hash
    with pytest.raises(ValueError, match="does not end"):
        chain.unhashed_encoding(encoded, "ab" * 32)
    with pytest.raises(ValueError, match="not a HistoryEvent"):
        chain.unhashed_encoding(CURRENT.record({**event, "hash": digest}), digest)


@pytest.mark.parametrize("writer", [V2, V3, V5, V6, V7, V8, V9], ids=["v2", "v3", "v5", "v6", "v7", "v8", "v9"])
def test_a_run_sealed_under_an_old_version_verifies_on_the_topic(writer: Writer) -> None:
    written = _write([writer])
    replay = _topic(written.records)
    audit = replay.runs[RUN.run_id]
    assert replay.divergences() == [] and audit.state.status == "Completed"
    # What the audit did before: the same events re-encoded under the current schema.
    events = [avro.decode(row)[1] for row in written.rows]
    assert chain.first_break(events) == 1


@pytest.mark.parametrize("writer", [V2, V3, V5, V6, V7, V8, V9], ids=["v2", "v3", "v5", "v6", "v7", "v8", "v9"])
def test_a_changed_byte_of_an_old_record_still_breaks_the_chain(writer: Writer) -> None:
    records = _write([writer]).records
    records[4] = _tamper(records[4], b"Charge", b"Chargf")  # event 5's activity type; its hash left alone
    replay = _topic(records)
    assert _kinds(replay.divergences()) == [(r.CHAIN_BREAK, 5)]


def test_history_events_rows_written_under_an_old_version_verify_and_a_changed_row_does_not() -> None:
    written = _write([V3])
    audit = _topic(written.records).runs[RUN.run_id]
    assert r.compare_run(audit, written.rows, audit.state.dumps()) == []
    rows = [*written.rows]
    rows[5] = _tamper(rows[5], b"\x02w", b"\x02x")  # event 6's identity
    found = r.compare_run(audit, rows, audit.state.dumps())
    assert _kinds(found) == [(r.EVENT_MISMATCH, 6), (r.POSTGRES_CHAIN_BREAK, 6)]


def test_a_dropped_or_reordered_old_row_breaks_the_chain() -> None:
    rows = _write([V2]).rows
    events = [avro.decode(row)[1] for row in rows]
    assert chain.first_break(events, rows) is None
    assert not chain.follows("not hex", events[1], rows[1])  # after a garbled hash: a break, not a crash
    assert chain.first_break(events[:3] + events[4:], rows[:3] + rows[4:]) == 5
    swapped = [0, 1, 3, 2, *range(4, len(rows))]
    assert chain.first_break([events[i] for i in swapped], [rows[i] for i in swapped]) == 4


def test_a_run_upgraded_midway_verifies_everywhere_and_keeps_its_bytes() -> None:
    written = _write(_upgraded_midway())
    assert len({row[:10] for row in written.rows}) == 3  # three HistoryEvent versions
    replay = _topic(written.records)
    audit = replay.runs[RUN.run_id]
    assert replay.divergences() == [] and audit.state.status == "Completed"
    assert r.compare_run(audit, written.rows, audit.state.dumps()) == []
    # A rebuild writes each event's bytes as written: their hashes were made from them.
    assert [audit.encoding(i) for i in range(1, 12)] == written.rows

    auditor = StreamAuditor()
    for offset, data in enumerate(written.records):
        auditor.take(data, f"kadence.history[0]@{offset}")
    assert auditor.findings == []


def test_a_changed_event_of_the_old_part_of_an_upgraded_run_is_caught() -> None:
    written = _write(_upgraded_midway())
    records = [*written.records]
    records[2] = _tamper(records[2], b"\x02w", b"\x02x")  # event 3 (version 2): the worker's identity
    assert _kinds(_topic(records).divergences()) == [(r.CHAIN_BREAK, 3)]
    auditor = StreamAuditor()
    for offset, data in enumerate(records):
        auditor.take(data, f"kadence.history[0]@{offset}")
    assert len(auditor.findings) == 1 and "chain-break at event 3" in auditor.findings[0]


def test_a_run_joined_mid_history_is_completed_from_old_rows() -> None:
    written = _write(_upgraded_midway())
    replay = r.Replay()
    for data in written.records[6:]:
        replay.add_record(avro.decode(data)[1], data=data)
    replay.seed(RUN, written.rows[:6])
    replay.finish()
    assert replay.divergences() == [] and replay.runs[RUN.run_id].state.status == "Completed"


def test_events_from_before_the_chain_are_accepted_only_before_its_first_hash() -> None:
    # Version 1 events carry no hash; the first event sealed after the upgrade chains onto "".
    rows = _write([V1] * 3 + [V2]).rows
    events = [avro.decode(row)[1] for row in rows]
    assert [e["hash"] for e in events[:3]] == ["", "", ""] and events[3]["hash"]
    assert chain.first_break(events, rows) is None
    # An unsealed event after a sealed one is no writer's doing (writers were upgraded, not back).
    late = V1.encode({k: v for k, v in events[5].items() if k != "hash"})
    assert chain.first_break([*events[:5], avro.decode(late)[1]], [*rows[:5], late]) == 6


def test_a_history_event_version_never_saved_apart_is_learnt_from_its_record(tmp_path: Path) -> None:
    here = avro.schemas_dir()
    shutil.copytree(here, tmp_path, dirs_exist_ok=True)
    (tmp_path / "versions" / "kadence.HistoryEvent.v3.avsc").unlink()
    schemas = avro.Schemas(tmp_path)
    sealed, row = V3.seal("", {"event_id": 1, "event_time": 7, "event_type": "MarkerRecorded",
                               "attributes": {"marker_name": "m", "details": None,
                                              "workflow_task_completed_event_id": 0}})
    assert schemas.history_event_encoding(V3.record(sealed)) == row
    assert schemas.decode(row) == ("HistoryEvent", sealed)


def _cancelled_bodies() -> list[tuple[str, dict[str, Any]]]:
    """The run of _bodies() up to its activity's start, then cancelled: the activity is asked
    to stop, reports it, and the run closes as Canceled (the events of HistoryEvent v7)."""
    wt_started = {"identity": "w", "started_time": 2000}
    return [*_bodies()[:6],
            ("WorkflowExecutionCancelRequested", {"reason": "stop", "identity": "me", "request_id": "c"}),
            ("WorkflowTaskScheduled", {"task_queue": "q", "start_to_close_timeout_ms": 10000, "attempt": 1}),
            ("WorkflowTaskStarted", {"scheduled_event_id": 8, "ran_ahead_id": 0, **wt_started}),
            ("WorkflowTaskCompleted", {"scheduled_event_id": 8, "started_event_id": 9, "identity": "w"}),
            ("ActivityTaskCancelRequested", {"scheduled_event_id": 5, "workflow_task_completed_event_id": 10}),
            ("ActivityTaskCanceled", {"scheduled_event_id": 5, "started_event_id": 6,
                                      "latest_cancel_requested_event_id": 11, "details": None, "identity": "w"}),
            ("WorkflowTaskScheduled", {"task_queue": "q", "start_to_close_timeout_ms": 10000, "attempt": 1}),
            ("WorkflowTaskStarted", {"scheduled_event_id": 13, "ran_ahead_id": 0, **wt_started}),
            ("WorkflowTaskCompleted", {"scheduled_event_id": 13, "started_event_id": 14, "identity": "w"}),
            ("WorkflowExecutionCanceled", {"details": None, "workflow_task_completed_event_id": 15})]


def _seal_run(bodies: list[tuple[str, dict[str, Any]]], before: Writer, after: Writer, *,
              switch_after: int) -> tuple[list[bytes], list[bytes]]:
    """Seal ``bodies`` as one run's chain, the first ``switch_after`` events by ``before`` and
    the rest by ``after`` (an upgrade midway); the stored rows and the published records."""
    rows, records, previous = [], [], ""
    for i, (kind, attributes) in enumerate(bodies, start=1):
        writer = before if i <= switch_after else after
        sealed, row = writer.seal(previous, {"event_id": i, "event_time": 1000 + i, "event_type": kind,
                                             "attributes": attributes})
        previous = sealed["hash"]
        rows.append(row)
        records.append(writer.record(sealed))
    return rows, records


# The cancellation events were first written under HistoryEvent v7 (before child workflows
# took v8): a run cancelled then, or upgraded to v8 midway, verifies as well.
@pytest.mark.parametrize(("before", "after"), [(V6, CURRENT), (V5, CURRENT), (V6, V7), (V7, CURRENT)],
                         ids=["v6-current", "v5-current", "v6-v7", "v7-current"])
def test_a_run_from_before_cancellation_goes_on_with_the_cancellation_events_and_verifies(
        before: Writer, after: Writer) -> None:
    rows, records = _seal_run(_cancelled_bodies(), before, after, switch_after=6)
    assert len({row[:10] for row in rows}) == 2
    replay = _topic(records)
    audit = replay.runs[RUN.run_id]
    assert replay.divergences() == [] and audit.state.status == "Canceled"
    assert r.compare_run(audit, rows, audit.state.dumps()) == []
    records[6] = _tamper(records[6], b"stop", b"stoq")  # the cancel request's reason, its hash left alone
    assert _kinds(_topic(records).divergences()) == [(r.CHAIN_BREAK, 7)]


def _updated_bodies() -> list[tuple[str, dict[str, Any]]]:
    """The run of _bodies() up to its first workflow task, then a task that accepts and
    completes an update and closes the run (the events of HistoryEvent v10)."""
    wt_started = {"identity": "w", "started_time": 2000}
    return [*_bodies()[:4],
            ("WorkflowTaskScheduled", {"task_queue": "q", "start_to_close_timeout_ms": 10000, "attempt": 1}),
            ("WorkflowTaskStarted", {"scheduled_event_id": 5, "ran_ahead_id": 0, **wt_started}),
            ("WorkflowTaskCompleted", {"scheduled_event_id": 5, "started_event_id": 6, "identity": "w"}),
            ("WorkflowExecutionUpdateAccepted", {"update_id": "u1", "update_name": "add", "input": "[1]",
                                                 "identity": "me", "workflow_task_completed_event_id": 7}),
            ("WorkflowExecutionUpdateCompleted", {"update_id": "u1", "accepted_event_id": 8, "result": "1",
                                                  "failure": None, "workflow_task_completed_event_id": 7}),
            ("WorkflowExecutionCompleted", {"result": '"ok"', "workflow_task_completed_event_id": 7})]


# Updates took HistoryEvent v10 after child workflows took v8 and start policies v9: a run
# begun under an earlier version goes on with the update events.
@pytest.mark.parametrize("before", [V7, V8, V9], ids=["v7", "v8", "v9"])
def test_a_run_from_before_updates_goes_on_with_the_update_events_and_verifies(before: Writer) -> None:
    rows, records = _seal_run(_updated_bodies(), before, CURRENT, switch_after=4)
    assert len({row[:10] for row in rows}) == 2
    replay = _topic(records)
    audit = replay.runs[RUN.run_id]
    assert replay.divergences() == [] and audit.state.status == "Completed"
    assert audit.state.updates["u1"].completed and audit.state.updates["u1"].result == "1"
    assert r.compare_run(audit, rows, audit.state.dumps()) == []
    records[7] = _tamper(records[7], b"add", b"adc")  # the accepted update's name, its hash left alone
    assert _kinds(_topic(records).divergences()) == [(r.CHAIN_BREAK, 8)]


def _reset_bodies() -> list[tuple[str, dict[str, Any]]]:
    """A run made by a reset (services/history/reset.py): the copy of _bodies() up to its
    first workflow task's start, the task failed by the reset (naming both runs), a signal
    received again, a new task that completes the run (the events of HistoryEvent v12)."""
    wt_started = {"identity": "w", "started_time": 2000}
    return [*_bodies()[:3],
            ("WorkflowTaskFailed", {"scheduled_event_id": 2, "started_event_id": 3, "cause": "ResetWorkflow",
                                    "failure": None, "identity": "op", "base_run_id": "old-run",
                                    "new_run_id": RUN.run_id}),
            ("WorkflowExecutionSignaled", {"signal_name": "ship", "input": "[]", "identity": "", "request_id": "s"}),
            ("WorkflowTaskScheduled", {"task_queue": "q", "start_to_close_timeout_ms": 10000, "attempt": 1}),
            ("WorkflowTaskStarted", {"scheduled_event_id": 6, "ran_ahead_id": 0, **wt_started}),
            ("WorkflowTaskCompleted", {"scheduled_event_id": 6, "started_event_id": 7, "identity": "w"}),
            ("WorkflowExecutionCompleted", {"result": '"ok"', "workflow_task_completed_event_id": 8})]


# Reset took HistoryEvent v12 after search attributes took v11: a reset's new run, its copy
# written under v11 (as the run it was copied from), goes on under v12 and verifies.
def test_a_reset_run_replays_with_its_link_and_verifies_across_versions() -> None:
    rows, records = _seal_run(_reset_bodies(), V11, CURRENT, switch_after=3)
    assert len({row[:10] for row in rows}) == 2
    replay = _topic(records)
    audit = replay.runs[RUN.run_id]
    assert replay.divergences() == [] and audit.state.status == "Completed"
    assert audit.state.reset_from_run_id == "old-run" and audit.state.wt_failures == 0
    assert r.compare_run(audit, rows, audit.state.dumps()) == []
    records[3] = _tamper(records[3], b"old-run", b"old-ruN")  # the link, its hash left alone
    assert _kinds(_topic(records).divergences()) == [(r.CHAIN_BREAK, 4)]


def test_an_event_built_with_its_empty_hash_in_place_seals_as_one_without_it() -> None:
    # The builder adds "hash": "" before sealing, so the encoding need not copy the event:
    # the same digest and bytes as an event without the key, and the event left as it was.
    event = {"event_id": 3, "event_time": 7, "event_type": "MarkerRecorded",
             "attributes": {"marker_name": "m", "details": None, "workflow_task_completed_event_id": 0}}
    in_place = {**event, "hash": ""}
    previous = "ab" * 32
    digest, encoded = chain.seal(previous, in_place)
    assert (digest, encoded) == chain.seal(previous, event)
    assert in_place["hash"] == "" and "hash" not in event
    assert encoded == avro.encode("HistoryEvent", {**event, "hash": digest})
    assert chain.follows(previous, {**event, "hash": digest}, encoded)
