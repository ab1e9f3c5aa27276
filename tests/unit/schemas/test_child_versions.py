"""Records written before child workflows (HistoryEvent v7, HistoryRecord v6,
RespondWorkflowTaskCompleted and RespondActivityTaskCompleted v3, as cancellation left
them, and the versions before those) read with the new fields defaulted (a start with no
parent), fold as before, and their hash chains verify, also in a run upgraded midway."""

from __future__ import annotations

from typing import Any

import pytest

from kadence_protocol import avro
from services.audit import replay as r
from services.common import chain
from services.history.state import rebuild
from tests.unit.schemas.test_chain_versions import CURRENT, RUN, Writer, _bodies, _load, _topic
from tests.unit.schemas.test_timeout_versions import _written_under

pytestmark = pytest.mark.timeout(10)
V6 = Writer(_load("kadence.HistoryEvent.v6.avsc"), _load("kadence.HistoryRecord.v5.avsc"))
V7 = Writer(_load("kadence.HistoryEvent.v7.avsc"), _load("kadence.HistoryRecord.v6.avsc"))
BEFORE_CHILDREN = pytest.mark.parametrize("before", [V6, V7], ids=["v6", "v7"])


def _sealed(writers: list[Writer]) -> tuple[list[bytes], list[bytes]]:
    rows, records, previous = [], [], ""
    for i, (kind, attributes) in enumerate(_bodies(), start=1):
        writer = writers[min(i, len(writers)) - 1]
        sealed, row = writer.seal(previous, {"event_id": i, "event_time": 1000 + i, "event_type": kind,
                                             "attributes": attributes})
        previous = sealed["hash"]
        rows.append(row)
        records.append(writer.record(sealed))
    return rows, records


@BEFORE_CHILDREN
def test_a_run_written_before_children_reads_without_a_parent_and_verifies(before: Writer) -> None:
    rows, records = _sealed([before])
    events = [avro.decode(row)[1] for row in rows]
    started = events[0]["attributes"]
    assert started["parent_workflow_id"] is None and started["parent_initiated_event_id"] == 0
    assert chain.first_break(events, rows) is None
    state = rebuild(RUN.namespace, RUN.workflow_id, RUN.run_id, events)
    assert state.parent is None and state.children == {} and state.status == "Completed"
    replay = _topic(records)
    audit = replay.runs[RUN.run_id]
    assert replay.divergences() == [] and r.compare_run(audit, rows, audit.state.dumps()) == []


@BEFORE_CHILDREN
def test_a_run_upgraded_to_children_midway_verifies(before: Writer) -> None:
    rows, records = _sealed([before] * 5 + [CURRENT] * 6)
    assert len({row[:10] for row in rows}) == 2
    replay = _topic(records)
    audit = replay.runs[RUN.run_id]
    assert replay.divergences() == [] and r.compare_run(audit, rows, audit.state.dumps()) == []


@pytest.mark.parametrize("version", ["v2", "v3"])
@pytest.mark.parametrize("name", ["RespondWorkflowTaskCompleted", "RespondActivityTaskCompleted"])
def test_answers_from_before_child_commands_still_read(name: str, version: str) -> None:
    value: dict[str, Any] = {"namespace": "ns", "workflow_id": "w", "run_id": "r", "scheduled_event_id": 5,
                             "attempt": 1, "identity": "",
                             "commands": [{"command_type": "CompleteWorkflowExecution",
                                           "attributes": {"result": '"done"'}}]}
    if name == "RespondActivityTaskCompleted":
        value = {k: v for k, v in value.items() if k != "commands"} | {"result": '"ok"', "workflow_task": None}
    decoded_name, record = avro.decode(_written_under(f"kadence.{name}.{version}.avsc", name, value))
    assert decoded_name == name
    if name == "RespondWorkflowTaskCompleted":
        assert record["commands"][0]["attributes"] == {"result": '"done"'}


def test_a_child_start_command_round_trips_with_its_policy() -> None:
    command = {"command_type": "StartChildWorkflowExecution",
               "attributes": {"workflow_id": "c", "workflow_type": "Child", "task_queue": "", "input": "[1]",
                              "execution_timeout_ms": 0, "run_timeout_ms": 0, "workflow_task_timeout_ms": 0,
                              "parent_close_policy": "Abandon",
                              "retry_policy": {"initial_interval_ms": 10, "backoff_coefficient": 2.0,
                                               "maximum_interval_ms": 0, "maximum_attempts": 3,
                                               "non_retryable_error_types": ["Fatal"]}}}  # Command v7
    _, decoded = avro.decode(avro.encode("Command", command))
    assert decoded == command


# The fingerprints main's records were written with before child workflows took the next
# versions: a saved version that changed would leave those records unreadable.
SAVED = {"kadence.HistoryEvent.v7.avsc": 0xC4DD603F62CD19E7, "kadence.HistoryRecord.v6.avsc": 0x356E6D065CC774E9,
         "kadence.RespondWorkflowTaskCompleted.v3.avsc": 0xBFB86A1D3C6DBE5F,
         "kadence.RespondActivityTaskCompleted.v3.avsc": 0x08C1423BFEA7BA30,
         "kadence.HistoryEvent.v6.avsc": 0x0B45DEACB92FB75A}


@pytest.mark.parametrize("file", sorted(SAVED))
def test_saved_versions_keep_the_fingerprints_records_were_written_with(file: str) -> None:
    assert avro.fingerprint_of(_load(file)) == SAVED[file]
    assert avro.fingerprint_of(_load(file)) != avro.fingerprint_of(_load(file.split(".")[1]))


def test_an_answer_of_version_3_with_cancel_commands_reads() -> None:
    value: dict[str, Any] = {"namespace": "ns", "workflow_id": "w", "run_id": "r", "scheduled_event_id": 5,
                             "attempt": 1, "identity": "", "started_time": 0,
                             "commands": [{"command_type": "CancelWorkflowExecution", "attributes": {"details": None}}]}
    name, record = avro.decode(_written_under("kadence.RespondWorkflowTaskCompleted.v3.avsc",
                                              "RespondWorkflowTaskCompleted", value))
    assert name == "RespondWorkflowTaskCompleted" and record["commands"] == value["commands"]
