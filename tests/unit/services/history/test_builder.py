"""Transition helpers of builder.py: an event's attributes take every schema default."""

from __future__ import annotations

import pytest

from services.history.builder import event_attributes

pytestmark = pytest.mark.timeout(10)


def test_attributes_take_the_schema_defaults() -> None:
    attributes = event_attributes("ActivityTaskScheduled", {"activity_id": "1", "activity_type": "echo",
                                                            "task_queue": "q", "workflow_task_completed_event_id": 4})
    assert attributes["input"] is None and attributes["retry_policy"] is None
    assert attributes["start_to_close_timeout_ms"] == 0 and attributes["activity_id"] == "1"


def test_a_value_given_wins_over_the_default_and_the_defaults_are_not_shared() -> None:
    first = event_attributes("ActivityTaskScheduled", {"activity_id": "1", "activity_type": "echo", "task_queue": "q",
                                                       "workflow_task_completed_event_id": 4, "input": "[1]"})
    first["heartbeat_timeout_ms"] = 99
    second = event_attributes("ActivityTaskScheduled", {"activity_id": "2", "activity_type": "echo",
                                                        "task_queue": "q", "workflow_task_completed_event_id": 4})
    assert first["input"] == "[1]" and second["input"] is None and second["heartbeat_timeout_ms"] == 0


def test_an_unknown_attribute_is_refused_by_name() -> None:
    with pytest.raises(KeyError, match="nonsense"):
        event_attributes("TimerFired", {"timer_id": "t", "started_event_id": 2, "nonsense": 1})
