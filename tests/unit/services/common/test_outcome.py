"""The outcome a close notification carries to waiting result polls."""

from __future__ import annotations

import pytest

from services.common.outcome import MAX_PAYLOAD, close_payload, outcome, parse_close_payload

pytestmark = pytest.mark.timeout(10)


def test_the_outcome_of_each_status() -> None:
    state = {"result": '"done"', "failure": None, "new_run_id": None}
    assert outcome("Running", "r1", state) == {"status": "Running"}
    assert outcome("Completed", "r1", state) == {"status": "Completed", "run_id": "r1", "result": '"done"'}
    failure = {"message": "boom", "type": "ValueError"}
    assert outcome("Failed", "r1", {**state, "failure": failure}) == {"status": "Failed", "run_id": "r1",
                                                                      "failure": failure}
    assert outcome("ContinuedAsNew", "r1", {**state, "new_run_id": "r2"})["new_run_id"] == "r2"
    assert outcome("Terminated", "r1", {**state, "terminate_reason": "stop"}) == {
        "status": "Terminated", "run_id": "r1", "reason": "stop"}
    # A summary written before it kept the reason: an empty one.
    assert outcome("Terminated", "r1", state)["reason"] == ""
    assert "reason" not in outcome("Failed", "r1", {**state, "terminate_reason": "x"})


def test_a_close_payload_carries_the_outcome_when_it_fits() -> None:
    small = outcome("Completed", "r1", {"result": '"é"'})
    assert parse_close_payload(close_payload("r1", small)) == ("r1", small)
    big = outcome("Completed", "r1", {"result": '"' + "x" * MAX_PAYLOAD + '"'})
    assert close_payload("r1", big) == "r1"
    assert parse_close_payload("r1") == ("r1", None)  # also what history wrote before outcomes
    assert parse_close_payload("r1 {not json") == ("r1", None)
