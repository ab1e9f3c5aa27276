"""Which late async completions are the very answer that ended their attempt (a retry after
a lost reply: answered ok) and which are another answer (still refused)."""

from __future__ import annotations

from typing import Any

import pytest

from services.frontend.async_answers import closed_alike, retried_alike, same_failure

pytestmark = pytest.mark.timeout(5)

FAILURE = {"message": "boom", "type": "ValueError", "stack_trace": "tb", "non_retryable": False, "details": None}


def _event(kind: str, **attributes: Any) -> dict[str, Any]:
    return {"event_id": 9, "event_type": kind, "attributes": {"scheduled_event_id": 5, "started_event_id": 8,
                                                              "identity": "me", **attributes}}


@pytest.mark.parametrize(("name", "fields", "closing", "attempt", "alike"), [
    ("RespondActivityTaskCompleted", {"result": '"r"'}, _event("ActivityTaskCompleted", result='"r"'), 2, True),
    ("RespondActivityTaskCompleted", {"result": '"other"'}, _event("ActivityTaskCompleted", result='"r"'), 2, False),
    ("RespondActivityTaskCompleted", {"result": '"r"'}, _event("ActivityTaskCompleted", result='"r"'), 1, False),
    ("RespondActivityTaskCompleted", {"result": '"r"'}, _event("ActivityTaskCompleted", result='"r"',
                                                               identity="someone else"), 2, False),
    ("RespondActivityTaskCompleted", {"result": None}, _event("ActivityTaskFailed", failure=FAILURE), 2, False),
    ("RespondActivityTaskCompleted", {"result": None}, _event("ActivityTaskTimedOut"), 2, False),
    ("RespondActivityTaskFailed", {"failure": dict(FAILURE)}, _event("ActivityTaskFailed", failure=FAILURE), 2, True),
    ("RespondActivityTaskFailed", {"failure": {**FAILURE, "message": "bang"}},
     _event("ActivityTaskFailed", failure=FAILURE), 2, False),
    ("RespondActivityTaskFailed", {"failure": dict(FAILURE)}, _event("ActivityTaskCompleted", result=None), 2, False),
    ("RespondActivityTaskCanceled", {"details": "[1]"}, _event("ActivityTaskCanceled", details="[1]"), 2, True),
    ("RespondActivityTaskCanceled", {"details": "[2]"}, _event("ActivityTaskCanceled", details="[1]"), 2, False),
    # An unasked cancellation is recorded as a failure of its own type, with its details.
    ("RespondActivityTaskCanceled", {"details": "[1]"}, _event("ActivityTaskFailed", failure={
        **FAILURE, "type": "ActivityCanceledUnasked", "details": "[1]"}), 2, True),
    ("RespondActivityTaskCanceled", {"details": "[1]"}, _event("ActivityTaskFailed", failure=FAILURE), 2, False),
])
def test_a_closing_event_is_the_answer_only_when_kind_attempt_identity_and_payload_agree(
        name: str, fields: dict[str, Any], closing: dict[str, Any], attempt: int, alike: bool) -> None:
    assert closed_alike(name, "me", fields, closing, started_attempt=2, attempt=attempt) is alike


def test_a_retried_failure_is_the_answer_when_the_next_attempt_carries_it() -> None:
    pending = {"attempt": 3, "last_failure": FAILURE}
    assert retried_alike("RespondActivityTaskFailed", {"failure": dict(FAILURE)}, pending, 2)
    assert not retried_alike("RespondActivityTaskFailed", {"failure": dict(FAILURE)}, pending, 3)  # still running
    assert not retried_alike("RespondActivityTaskFailed", {"failure": {**FAILURE, "message": "x"}}, pending, 2)
    assert not retried_alike("RespondActivityTaskCompleted", {"result": None}, pending, 2)
    assert not retried_alike("RespondActivityTaskFailed", {"failure": dict(FAILURE)}, None, 2)
    timed_out = {"attempt": 3, "last_failure": {**FAILURE, "message": "activity timed out (StartToClose)",
                                                "type": "TimeoutError"}}
    assert not retried_alike("RespondActivityTaskFailed", {"failure": dict(FAILURE)}, timed_out, 2)
    unasked = {"attempt": 3, "last_failure": {**FAILURE, "type": "ActivityCanceledUnasked", "details": "[1]"}}
    assert retried_alike("RespondActivityTaskCanceled", {"details": "[1]"}, unasked, 2)
    assert not retried_alike("RespondActivityTaskCanceled", {"details": "[2]"}, unasked, 2)


def test_failures_compare_with_absent_fields_as_their_defaults() -> None:
    assert same_failure({"message": "m"}, {"message": "m", "type": "", "non_retryable": False, "details": None,
                                           "stack_trace": ""})
    assert not same_failure({"message": "m", "non_retryable": True}, {"message": "m"})
    assert same_failure(None, None)
    assert not same_failure(None, {"message": "m"})
