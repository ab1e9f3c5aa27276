"""oversize.refit: an answer over the payload limit made into one history takes."""

from __future__ import annotations

from typing import Any

import pytest

from services.common import validation as common
from services.frontend.oversize import refit

LIMITS = common.Limits(max_payload_bytes=100)


def _failure(**over: Any) -> dict[str, Any]:
    return {"message": "m", "type": "E", "stack_trace": "", "non_retryable": False, "details": None, **over}


def _record(fields: dict[str, Any]) -> dict[str, Any]:
    return {"namespace": "default", "workflow_id": "w", "run_id": "r", "scheduled_event_id": 5, "attempt": 1,
            "identity": "", **fields}


def _fitted(name: str, fields: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Refit until the record passes history's check, as the engine does."""
    for _ in range(4):
        try:
            common.check_command(name, _record(fields), LIMITS)
        except common.TooLarge as exc:
            refitted = refit(name, fields, exc, LIMITS)
            assert refitted is not None, exc.message
            name, fields = refitted
            continue
        return name, fields
    raise AssertionError("never fits")


def test_a_result_over_the_limit_fails_the_activity_for_good() -> None:
    name, fields = _fitted("RespondActivityTaskCompleted", {"result": '"' + "x" * 200 + '"', "workflow_task": None})
    assert name == "RespondActivityTaskFailed"
    assert fields["failure"]["type"] == "PayloadTooLarge" and fields["failure"]["non_retryable"] is True


def test_a_failure_too_long_is_cut_and_its_details_left_out() -> None:
    long = _failure(message="é" * 300, stack_trace="s" * 300, details='"' + "d" * 200 + '"')
    name, fields = _fitted("RespondActivityTaskFailed", {"failure": long, "last_heartbeat_details": None})
    failure = fields["failure"]
    assert name == "RespondActivityTaskFailed" and failure["details"] is None
    assert failure["message"].startswith("éé") and len(failure["message"].encode()) <= 100
    assert failure["stack_trace"].endswith("[cut: over KADENCE_MAX_PAYLOAD_BYTES]")


def test_a_command_over_the_limit_fails_the_workflow_task() -> None:
    command = {"command_type": "CompleteWorkflowExecution", "attributes": {"result": '"' + "x" * 200 + '"'}}
    name, fields = _fitted("RespondWorkflowTaskCompleted", {"commands": [command], "started_time": 0})
    assert name == "RespondWorkflowTaskFailed" and fields["cause"] == "PayloadTooLarge"
    assert "commands[0].attributes.result" in fields["failure"]["message"]


def test_a_limit_smaller_than_the_mark_still_fits() -> None:
    tiny = common.Limits(max_payload_bytes=8)
    error = common.TooLarge("failure.message", "must be at most 8 characters")
    refitted = refit("RespondWorkflowTaskFailed", {"cause": "X", "failure": _failure(message="m" * 50)}, error, tiny)
    assert refitted is not None and refitted[1]["failure"]["message"] == "m" * 8


@pytest.mark.parametrize(("name", "field"), [("RecordActivityTaskHeartbeat", "details"),
                                             ("RespondWorkflowTaskFailed", "cause")])
def test_what_an_answer_cannot_do_without_stays_refused(name: str, field: str) -> None:
    assert refit(name, {}, common.TooLarge(field, "must be at most 100 bytes"), LIMITS) is None
