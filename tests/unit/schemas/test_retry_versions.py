"""The versions the workflow retry policy bumped read their predecessors with defaults:
StartWorkflowExecution v5 and StartChildWorkflowExecution v1 (before retry_policy),
RespondWorkflowTaskCompleted v7 (a child's start before retry_policy)."""

from __future__ import annotations

import pytest

from kadence_protocol import avro
from tests.unit.schemas.test_policy_versions import START, _old_request

pytestmark = pytest.mark.timeout(10)

POLICY = {"initial_interval_ms": 10, "backoff_coefficient": 2.0, "maximum_interval_ms": 0, "maximum_attempts": 3,
          "non_retryable_error_types": ["Fatal"]}


def test_a_version_5_start_reads_without_a_retry_policy() -> None:
    record = {**START, "id_reuse_policy": "", "id_conflict_policy": "", "memo": None, "search_attributes": None,
              "cron_schedule": None}
    name, start = avro.decode(_old_request("kadence.StartWorkflowExecution.v5.avsc", "StartWorkflowExecution", record))
    assert name == "StartWorkflowExecution" and start == {**record, "retry_policy": None}
    current = {**record, "retry_policy": POLICY}
    assert avro.decode(avro.encode("StartWorkflowExecution", current))[1] == current


def test_a_version_1_child_start_reads_without_a_retry_policy() -> None:
    record = {"namespace": "default", "workflow_id": "c", "new_run_id": "r", "workflow_type": "T", "task_queue": "q",
              "input": None, "execution_timeout_ms": 0, "run_timeout_ms": 0, "workflow_task_timeout_ms": 0,
              "request_id": "child:p:5", "parent_namespace": "default", "parent_workflow_id": "p",
              "parent_run_id": "pr", "parent_initiated_event_id": 5}
    name, start = avro.decode(_old_request("kadence.StartChildWorkflowExecution.v1.avsc",
                                           "StartChildWorkflowExecution", record))
    assert name == "StartChildWorkflowExecution" and start == {**record, "retry_policy": None}


def test_version_7_task_answers_read_a_child_start_without_a_retry_policy() -> None:
    child = {"command_type": "StartChildWorkflowExecution",
             "attributes": {"workflow_id": "c", "workflow_type": "Child", "task_queue": "", "input": "[1]",
                            "execution_timeout_ms": 0, "run_timeout_ms": 0, "workflow_task_timeout_ms": 0,
                            "parent_close_policy": "Abandon"}}
    answer = {"namespace": "default", "workflow_id": "w", "run_id": "r", "scheduled_event_id": 2, "attempt": 1,
              "identity": "i", "commands": [child], "started_time": 0}
    name, decoded = avro.decode(_old_request("kadence.RespondWorkflowTaskCompleted.v7.avsc",
                                             "RespondWorkflowTaskCompleted", answer))
    assert name == "RespondWorkflowTaskCompleted"
    assert decoded["commands"] == [{**child, "attributes": {**child["attributes"], "retry_policy": None}}]


@pytest.mark.parametrize("name", ["StartWorkflowExecution", "StartChildWorkflowExecution",
                                  "RespondWorkflowTaskCompleted", "RespondActivityTaskCompleted", "HistoryEvent",
                                  "HistoryRecord"])
def test_the_saved_versions_are_not_the_current_ones(name: str) -> None:
    here = avro.schemas_dir()
    saved = sorted((here / "versions").glob(f"kadence.{name}.v*.avsc"), key=lambda p: int(p.stem.rsplit("v", 1)[1]))
    newest = avro.Schemas._load_version(saved[-1], here)
    assert avro.fingerprint_of(newest) != avro.schemas().fingerprint(name)
