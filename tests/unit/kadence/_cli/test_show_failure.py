"""`kadence workflow show` names a failure's type beside its message (an ApplicationError's
type, an exception's class), so a failed run's timeline says which error it was."""

from __future__ import annotations

from kadence._cli.workflow import _details


def test_a_failure_shows_its_type_and_message() -> None:
    event = {"event_type": "WorkflowExecutionFailed",
             "attributes": {"failure": {"message": "refund 1 refused", "type": "Refused"}}}
    assert _details(event).plain == "failure: Refused: refund 1 refused"
    untyped = {"event_type": "WorkflowExecutionFailed", "attributes": {"failure": {"message": "boom"}}}
    assert _details(untyped).plain == "failure: boom"
