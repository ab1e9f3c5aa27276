"""Records written before run timeouts, chain expirations, the final attempt's last_failure
and a failure's heartbeat details (HistoryEvent v5, HistoryRecord v4, StartWorkflowExecution,
SignalWithStartWorkflowExecution and RespondActivityTaskFailed v1) read with their defaults,
fold to what they meant, and their hash chains still verify."""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pytest

from kadence_protocol import avro
from services.audit import replay as r
from services.common import chain
from services.history.state import rebuild
from tests.unit.schemas.test_chain_versions import CURRENT, RUN, Writer, _bodies, _load, _topic

pytestmark = pytest.mark.timeout(10)
V5 = Writer(_load("kadence.HistoryEvent.v5.avsc"), _load("kadence.HistoryRecord.v4.avsc"))


def _sealed(writers: list[Writer]) -> tuple[list[bytes], list[bytes]]:
    rows, records, previous = [], [], ""
    for i, (kind, attributes) in enumerate(_bodies(), start=1):
        writer = writers[min(i, len(writers)) - 1]
        event = {"event_id": i, "event_time": 1000 + i, "event_type": kind, "attributes": attributes}
        if i == 1:
            event["attributes"] = {**attributes, "execution_timeout_ms": 500}
        sealed, row = writer.seal(previous, event)
        previous = sealed["hash"]
        rows.append(row)
        records.append(writer.record(sealed))
    return rows, records


def test_a_run_written_under_version_5_reads_with_defaults_and_folds_to_its_old_timeout() -> None:
    rows, records = _sealed([V5])
    events = [avro.decode(row)[1] for row in rows]
    started = events[0]["attributes"]
    assert started["run_timeout_ms"] == 0 and started["execution_expiration_time"] == 0
    assert events[5]["event_type"] == "ActivityTaskStarted" and events[5]["attributes"]["last_failure"] is None
    assert chain.first_break(events, rows) is None
    state = rebuild(RUN.namespace, RUN.workflow_id, RUN.run_id, events[:1])
    assert state.execution_expiration_time == 1001 + 500 and state.timeout_at() == 1501
    replay = _topic(records)
    audit = replay.runs[RUN.run_id]
    assert replay.divergences() == [] and audit.state.status == "Completed"
    assert r.compare_run(audit, rows, audit.state.dumps()) == []


def test_a_run_upgraded_from_version_5_midway_verifies() -> None:
    rows, records = _sealed([V5] * 5 + [CURRENT] * 6)
    assert len({row[:10] for row in rows}) == 2
    replay = _topic(records)
    audit = replay.runs[RUN.run_id]
    assert replay.divergences() == [] and r.compare_run(audit, rows, audit.state.dumps()) == []


def _written_under(version_file: str, name: str, value: dict[str, Any]) -> bytes:
    schema = _load(version_file)
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, avro.tag_unions(name, value))
    return b"\xc3\x01" + avro.fingerprint_of(schema).to_bytes(8, "little") + out.getvalue()


@pytest.mark.parametrize("name", ["StartWorkflowExecution", "SignalWithStartWorkflowExecution"])
def test_starts_from_before_run_timeouts_read_without_one(name: str) -> None:
    value: dict[str, Any] = {"namespace": "ns", "workflow_id": "w", "workflow_type": "T", "task_queue": "q",
                             "input": "[]", "execution_timeout_ms": 1000, "workflow_task_timeout_ms": 10000,
                             "request_id": "r", "identity": "", "reply_to": None}
    if name == "SignalWithStartWorkflowExecution":
        value |= {"signal_name": "s", "signal_input": None}
    decoded_name, record = avro.decode(_written_under(f"kadence.{name}.v1.avsc", name, value))
    assert decoded_name == name and record["run_timeout_ms"] == 0 and record["execution_timeout_ms"] == 1000


def test_failures_from_before_heartbeat_details_read_without_them() -> None:
    value = {"namespace": "ns", "workflow_id": "w", "run_id": "r", "scheduled_event_id": 5, "attempt": 1,
             "identity": "", "failure": {"message": "m", "type": "E", "stack_trace": "", "non_retryable": False,
                                         "details": None}}
    name, record = avro.decode(_written_under("kadence.RespondActivityTaskFailed.v1.avsc",
                                              "RespondActivityTaskFailed", value))
    assert name == "RespondActivityTaskFailed" and record["last_heartbeat_details"] is None
