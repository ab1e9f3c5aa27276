"""Records written before start policies, memo and history limits (HistoryEvent v8 and
HistoryRecord v7 as child workflows left them, and v7/v6 before those; StartWorkflowExecution
and SignalWithStartWorkflowExecution v2; RespondWorkflowTaskCompleted v4 and v3) read with
their defaults, and a run written under those versions still verifies and folds after the bump."""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pytest

from kadence_protocol import avro
from services.audit import replay as r
from tests.unit.schemas.test_chain_versions import CURRENT, Writer, _bodies, _load, _topic

pytestmark = pytest.mark.timeout(10)
V7 = Writer(_load("kadence.HistoryEvent.v7.avsc"), _load("kadence.HistoryRecord.v6.avsc"))
V8 = Writer(_load("kadence.HistoryEvent.v8.avsc"), _load("kadence.HistoryRecord.v7.avsc"))
BEFORE_POLICIES = pytest.mark.parametrize("before", [V7, V8], ids=["v7", "v8"])


def _old_request(file: str, name: str, record: dict[str, Any]) -> bytes:
    schema = _load(file)
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, avro.tag_unions(name, record))
    return b"\xc3\x01" + avro.fingerprint_of(schema).to_bytes(8, "little") + out.getvalue()


START = {"namespace": "default", "workflow_id": "w", "workflow_type": "T", "task_queue": "q", "input": "[]",
         "execution_timeout_ms": 0, "run_timeout_ms": 0, "workflow_task_timeout_ms": 10000, "request_id": "r",
         "identity": "i", "reply_to": None}


def test_a_version_2_start_reads_with_the_default_policies_and_no_memo() -> None:
    name, start = avro.decode(_old_request("kadence.StartWorkflowExecution.v2.avsc", "StartWorkflowExecution", START))
    assert name == "StartWorkflowExecution"
    assert start["id_reuse_policy"] == "" and start["id_conflict_policy"] == "" and start["memo"] is None
    record = {**START, "signal_name": "s", "signal_input": None}
    name, sws = avro.decode(_old_request("kadence.SignalWithStartWorkflowExecution.v2.avsc",
                                         "SignalWithStartWorkflowExecution", record))
    assert sws["id_reuse_policy"] == "" and sws["memo"] is None and sws["signal_name"] == "s"


def test_the_current_start_round_trips_its_new_fields() -> None:
    record = {**START, "id_reuse_policy": "RejectDuplicate", "id_conflict_policy": "UseExisting",
              "memo": '{"a":1}', "search_attributes": '{"CustomerId":"c"}',  # search attributes: version 4
              "cron_schedule": None,  # version 5
              "retry_policy": {"initial_interval_ms": 10, "backoff_coefficient": 2.0, "maximum_interval_ms": 0,
                               "maximum_attempts": 3, "non_retryable_error_types": []}}  # version 6
    assert avro.decode(avro.encode("StartWorkflowExecution", record))[1] == record


def _sealed(writers: list[Writer]) -> tuple[list[bytes], list[bytes]]:
    rows, records, previous = [], [], ""
    for i, (kind, attributes) in enumerate(_bodies(), start=1):
        writer = writers[min(i, len(writers)) - 1]
        event = {"event_id": i, "event_time": 1000 + i, "event_type": kind, "attributes": attributes}
        sealed, row = writer.seal(previous, event)
        previous = sealed["hash"]
        rows.append(row)
        records.append(writer.record(sealed))
    return rows, records


@BEFORE_POLICIES
def test_a_run_written_before_policies_reads_with_defaults_and_verifies(before: Writer) -> None:
    rows, records = _sealed([before])
    events = [avro.decode(row)[1] for row in rows]
    assert events[0]["attributes"]["memo"] is None
    scheduled = next(e for e in events if e["event_type"] == "WorkflowTaskScheduled")
    assert scheduled["attributes"]["history_size_bytes"] == 0
    assert scheduled["attributes"]["suggest_continue_as_new"] is False
    replay = _topic(records)
    audit = replay.runs["run-old"]
    assert replay.divergences() == [] and audit.state.status == "Completed"
    assert r.compare_run(audit, rows, audit.state.dumps()) == []


@BEFORE_POLICIES
def test_a_run_upgraded_midway_verifies(before: Writer) -> None:
    rows, records = _sealed([before] * 5 + [CURRENT] * 6)
    assert len({row[:10] for row in rows}) == 2
    replay = _topic(records)
    audit = replay.runs["run-old"]
    assert replay.divergences() == [] and r.compare_run(audit, rows, audit.state.dumps()) == []


@pytest.mark.parametrize("version", [3, 4])
def test_an_older_continue_as_new_answer_reads_without_a_memo(version: int) -> None:
    answer = {"namespace": "default", "workflow_id": "w", "run_id": "r", "scheduled_event_id": 2, "attempt": 1,
              "identity": "i", "started_time": 0, "commands": [{
                  "command_type": "ContinueAsNewWorkflowExecution",
                  "attributes": {"workflow_type": "", "task_queue": "", "input": "[]"}}]}
    file = f"kadence.RespondWorkflowTaskCompleted.v{version}.avsc"
    written = _old_request(file, "RespondWorkflowTaskCompleted",
                           {k: v for k, v in answer.items() if k in {f["name"] for f in _load(file)["fields"]}})
    name, read = avro.decode(written)
    assert name == "RespondWorkflowTaskCompleted"
    assert read["commands"][0]["attributes"] == {"workflow_type": "", "task_queue": "", "input": "[]", "memo": None,
                                                 "search_attributes": None}  # Command version 6
