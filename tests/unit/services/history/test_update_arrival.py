"""An update request's arrival order also names the run's last event then (summary.py
arrival_seq), and the frontend hands a request only with a task that brings that event."""

from __future__ import annotations

from kadence_protocol.enums import UpdateStage
from services.frontend.engine import _brought
from services.history.state import MutableState, UpdateRequest
from services.history.summary import arrival_seq, arrived_after, waiting_updates


def _request(s: MutableState, uid: str) -> None:
    s.update_requests[uid] = UpdateRequest(name="add", input="[1]", identity="", stage=UpdateStage.REQUESTED,
                                           seq=arrival_seq(s))


def test_requests_keep_their_order_and_name_the_last_event_they_came_after() -> None:
    s = MutableState(next_event_id=3)  # events 1 and 2 recorded
    _request(s, "a")
    _request(s, "b")  # same moment: after a, same event
    s.next_event_id = 4  # a signal recorded
    _request(s, "c")
    s.update_requests["old"] = UpdateRequest(name="add", input=None, identity="", stage=UpdateStage.REQUESTED,
                                             seq=1)  # an older build's plain counter
    waiting = waiting_updates(s)
    assert [(u["update_id"], u["after_event_id"]) for u in waiting] == [("old", 0), ("a", 2), ("b", 2), ("c", 3)]
    assert s.update_requests["b"].seq > s.update_requests["a"].seq
    assert [arrived_after(s.update_requests[u].seq) for u in ("old", "a", "b", "c")] == [0, 2, 2, 3]


def test_a_task_brings_only_the_requests_that_came_before_events_it_does_not_bring() -> None:
    s = MutableState(next_event_id=3)
    _request(s, "a")
    s.next_event_id = 4
    _request(s, "c")
    task = {"scheduled_event_id": 2}  # the task brings events up to 2, not the signal at 3
    assert _brought(waiting_updates(s), task) == [{"update_id": "a", "name": "add", "input": "[1]"}]
    assert [u["update_id"] for u in _brought(waiting_updates(s), {"scheduled_event_id": 4})] == ["a", "c"]
