"""Records written before child workflows (HistoryEvent v6, HistoryRecord v5,
RespondWorkflowTaskCompleted and RespondActivityTaskCompleted v2) read with the new
fields defaulted (a start with no parent), fold as before, and their hash chains verify,
also in a run upgraded midway."""

from __future__ import annotations

from typing import Any

import pytest

from kadence import avro
from services.audit import replay as r
from services.history import chain
from services.history.state import rebuild
from tests.unit.test_chain_versions import CURRENT, RUN, Writer, _bodies, _load, _topic
from tests.unit.test_timeout_schema_versions import _written_under

pytestmark = pytest.mark.timeout(10)
V6 = Writer(_load("kadence.HistoryEvent.v6.avsc"), _load("kadence.HistoryRecord.v5.avsc"))


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


def test_a_run_written_under_version_6_reads_without_a_parent_and_verifies() -> None:
    rows, records = _sealed([V6])
    events = [avro.decode(row)[1] for row in rows]
    started = events[0]["attributes"]
    assert started["parent_workflow_id"] is None and started["parent_initiated_event_id"] == 0
    assert chain.first_break(events, rows) is None
    state = rebuild(RUN.namespace, RUN.workflow_id, RUN.run_id, events)
    assert state.parent is None and state.children == {} and state.status == "Completed"
    replay = _topic(records)
    audit = replay.runs[RUN.run_id]
    assert replay.divergences() == [] and r.compare_run(audit, rows, audit.state.dumps()) == []


def test_a_run_upgraded_from_version_6_midway_verifies() -> None:
    rows, records = _sealed([V6] * 5 + [CURRENT] * 6)
    assert len({row[:10] for row in rows}) == 2
    replay = _topic(records)
    audit = replay.runs[RUN.run_id]
    assert replay.divergences() == [] and r.compare_run(audit, rows, audit.state.dumps()) == []


@pytest.mark.parametrize("name", ["RespondWorkflowTaskCompleted", "RespondActivityTaskCompleted"])
def test_answers_from_before_child_commands_still_read(name: str) -> None:
    value: dict[str, Any] = {"namespace": "ns", "workflow_id": "w", "run_id": "r", "scheduled_event_id": 5,
                             "attempt": 1, "identity": "",
                             "commands": [{"command_type": "CompleteWorkflowExecution",
                                           "attributes": {"result": '"done"'}}]}
    if name == "RespondActivityTaskCompleted":
        value = {k: v for k, v in value.items() if k != "commands"} | {"result": '"ok"', "workflow_task": None}
    decoded_name, record = avro.decode(_written_under(f"kadence.{name}.v2.avsc", name, value))
    assert decoded_name == name
    if name == "RespondWorkflowTaskCompleted":
        assert record["commands"][0]["attributes"] == {"result": '"done"'}


def test_a_child_start_command_round_trips_with_its_policy() -> None:
    command = {"command_type": "StartChildWorkflowExecution",
               "attributes": {"workflow_id": "c", "workflow_type": "Child", "task_queue": "", "input": "[1]",
                              "execution_timeout_ms": 0, "run_timeout_ms": 0, "workflow_task_timeout_ms": 0,
                              "parent_close_policy": "Abandon"}}
    _, decoded = avro.decode(avro.encode("Command", command))
    assert decoded == command
