"""The versions the schedule and visibility work bumped read their predecessors with defaults:
StartWorkflowExecution v4 (before cron_schedule), SignalWithStartWorkflowExecution v3 (before
search_attributes), RespondWorkflowTaskCompleted and RespondActivityTaskCompleted v6 (Command
before ContinueAsNewWorkflowExecution's search_attributes)."""

from __future__ import annotations

import pytest

from kadence_protocol import avro
from tests.unit.schemas.test_policy_versions import START, _old_request

pytestmark = pytest.mark.timeout(10)

CAN = {"command_type": "ContinueAsNewWorkflowExecution",
       "attributes": {"workflow_type": "T", "task_queue": "q", "input": "[1]", "memo": '{"m":1}'}}


def test_a_version_4_start_reads_without_a_cron_schedule() -> None:
    record = {**START, "id_reuse_policy": "", "id_conflict_policy": "", "memo": None,
              "search_attributes": '{"CustomerId":"c"}'}
    name, start = avro.decode(_old_request("kadence.StartWorkflowExecution.v4.avsc", "StartWorkflowExecution", record))
    assert name == "StartWorkflowExecution" and start == {**record, "cron_schedule": None, "retry_policy": None}
    current = {**record, "cron_schedule": "*/5 * * * *", "retry_policy": None}
    assert avro.decode(avro.encode("StartWorkflowExecution", current))[1] == current


def test_a_version_3_signal_with_start_reads_without_search_attributes() -> None:
    record = {**START, "signal_name": "s", "signal_input": None, "id_reuse_policy": "", "memo": '{"a":1}'}
    name, sws = avro.decode(_old_request("kadence.SignalWithStartWorkflowExecution.v3.avsc",
                                         "SignalWithStartWorkflowExecution", record))
    assert name == "SignalWithStartWorkflowExecution" and sws == {**record, "search_attributes": None}
    current = {**record, "search_attributes": '{"CustomerId":"c"}'}
    assert avro.decode(avro.encode("SignalWithStartWorkflowExecution", current))[1] == current


def test_version_6_task_answers_read_a_continue_as_new_without_search_attributes() -> None:
    answer = {"namespace": "default", "workflow_id": "w", "run_id": "r", "scheduled_event_id": 2, "attempt": 1,
              "identity": "i", "commands": [CAN], "started_time": 0}
    name, decoded = avro.decode(_old_request("kadence.RespondWorkflowTaskCompleted.v6.avsc",
                                             "RespondWorkflowTaskCompleted", answer))
    assert name == "RespondWorkflowTaskCompleted"
    assert decoded["commands"] == [{**CAN, "attributes": {**CAN["attributes"], "search_attributes": None}}]


@pytest.mark.parametrize("name", ["StartWorkflowExecution", "SignalWithStartWorkflowExecution",
                                  "RespondWorkflowTaskCompleted", "RespondActivityTaskCompleted"])
def test_the_saved_versions_are_not_the_current_ones(name: str) -> None:
    here = avro.schemas_dir()
    saved = sorted((here / "versions").glob(f"kadence.{name}.v*.avsc"), key=lambda p: int(p.stem.rsplit("v", 1)[1]))
    newest = avro.Schemas._load_version(saved[-1], here)
    assert avro.fingerprint_of(newest) != avro.schemas().fingerprint(name)
