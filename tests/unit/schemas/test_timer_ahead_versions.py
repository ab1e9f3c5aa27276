"""The versions timer run-ahead bumped read their predecessors with defaults:
RespondWorkflowTaskCompleted and RespondActivityTaskCompleted v9 (no runs_timers_ahead, read
as false); RespondTimerRunAhead is new (version 1)."""

from __future__ import annotations

import pytest

from kadence_protocol import avro
from tests.unit.schemas.test_policy_versions import _old_request

pytestmark = pytest.mark.timeout(10)
TIMER = {"command_type": "StartTimer", "attributes": {"timer_id": "1", "start_to_fire_timeout_ms": 1000,
                                                      "requested_time": 5}}


def test_a_version_9_task_answer_reads_as_not_running_timers_ahead() -> None:
    answer = {"namespace": "default", "workflow_id": "w", "run_id": "r", "scheduled_event_id": 2, "attempt": 1,
              "identity": "i", "commands": [TIMER], "started_time": 3}
    name, read = avro.decode(_old_request("kadence.RespondWorkflowTaskCompleted.v9.avsc",
                                          "RespondWorkflowTaskCompleted", answer))
    assert name == "RespondWorkflowTaskCompleted" and read == {**answer, "runs_timers_ahead": False}
    current = {**answer, "runs_timers_ahead": True}
    assert avro.decode(avro.encode("RespondWorkflowTaskCompleted", current))[1] == current


def test_a_version_9_activity_answer_reads_its_run_ahead_task_as_not_running_timers_ahead() -> None:
    ahead = {"after_scheduled_event_id": 2, "after_started_time": 1000, "started_time": 1010, "commands": [TIMER],
             "ahead_id": 7, "after_ahead_id": 0}
    answer = {"namespace": "default", "workflow_id": "w", "run_id": "r", "scheduled_event_id": 5, "attempt": 1,
              "identity": "i", "result": "1", "workflow_task": ahead}
    name, read = avro.decode(_old_request("kadence.RespondActivityTaskCompleted.v9.avsc",
                                          "RespondActivityTaskCompleted", answer))
    assert name == "RespondActivityTaskCompleted"
    assert read["workflow_task"] == {**ahead, "runs_timers_ahead": False}
