"""The reset point a ResetWorkflowExecution names (services/history/reset.py) and the
command's validation (services/common/validation.py), without a cluster."""

from __future__ import annotations

from typing import Any

import pytest

from kadence_protocol.enums import UpdateStage
from kadence_protocol.reset import ResetPoint
from services.common import validation
from services.history.builder import Transition
from services.history.reset import InvalidReset, _carry_updates, choose_point, new_run_id
from services.history.state import MutableState, UpdateInfo, UpdateRequest, UpdateWaiter

pytestmark = pytest.mark.timeout(30)

KINDS = ["WorkflowExecutionStarted", "WorkflowTaskScheduled", "WorkflowTaskStarted", "WorkflowTaskCompleted",
         "ActivityTaskScheduled", "ActivityTaskCompleted", "WorkflowTaskScheduled", "WorkflowTaskStarted",
         "WorkflowTaskFailed", "WorkflowTaskScheduled", "WorkflowTaskStarted", "WorkflowTaskCompleted"]
TASK = {3: (2, 0), 4: (2, 3), 8: (7, 0), 9: (7, 8), 11: (10, 0), 12: (10, 11)}


def _events() -> list[dict[str, Any]]:
    events = []
    for i, kind in enumerate(KINDS, start=1):
        scheduled, started = TASK.get(i, (0, 0))
        events.append({"event_id": i, "event_type": kind,
                       "attributes": {"scheduled_event_id": scheduled, "started_event_id": started}})
    return events


def test_first_and_last_name_the_first_task_and_the_last_completed_one() -> None:
    assert choose_point(_events(), ResetPoint.FIRST, 0, "r") == (3, 2)
    assert choose_point(_events(), ResetPoint.LAST, 0, "r") == (11, 10)


@pytest.mark.parametrize(("event_id", "point"), [(3, (3, 2)), (4, (3, 2)), (8, (8, 7)), (9, (8, 7)), (12, (11, 10))])
def test_any_event_of_a_started_task_names_it(event_id: int, point: tuple[int, int]) -> None:
    assert choose_point(_events(), ResetPoint.EVENT_ID, event_id, "r") == point


@pytest.mark.parametrize(("event_id", "says"), [
    (1, "is WorkflowExecutionStarted"), (2, "is WorkflowTaskScheduled"), (5, "is ActivityTaskScheduled"),
    (13, "has events 1 to 12: there is no event 13")])
def test_an_event_of_no_started_task_is_refused_saying_why(event_id: int, says: str) -> None:
    with pytest.raises(InvalidReset, match=says):
        choose_point(_events(), ResetPoint.EVENT_ID, event_id, "r")


def test_a_run_without_tasks_has_no_point() -> None:
    with pytest.raises(InvalidReset, match="no workflow task started"):
        choose_point(_events()[:2], ResetPoint.FIRST, 0, "r")
    with pytest.raises(InvalidReset, match="completed no workflow task"):
        choose_point(_events()[:3], ResetPoint.LAST, 0, "r")


def test_the_new_run_id_is_fixed_by_the_request() -> None:
    assert new_run_id("a", "req") == new_run_id("a", "req") != new_run_id("b", "req")
    assert new_run_id("a", "") != new_run_id("a", "")


def _cmd(**changes: Any) -> dict[str, Any]:
    return {"namespace": "default", "workflow_id": "w", "run_id": None, "reset_point": "", "event_id": 3,
            "reapply_signals": True, "reason": "", "request_id": "r", "identity": "", "reply_to": None, **changes}


@pytest.mark.parametrize(("changes", "field"), [
    ({"reset_point": "middle"}, "reset_point"), ({"event_id": 0}, "event_id"),
    ({"reset_point": "first", "event_id": 3}, "event_id"), ({"reapply_signals": 1}, "reapply_signals"),
    ({"workflow_id": ""}, "workflow_id")])
def test_validation_names_the_bad_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(validation.Invalid) as caught:
        validation.check_command("ResetWorkflowExecution", _cmd(**changes))
    assert caught.value.field == field


def test_validation_takes_each_reset_point() -> None:
    validation.check_command("ResetWorkflowExecution", _cmd())
    validation.check_command("ResetWorkflowExecution", _cmd(reset_point="first", event_id=0))
    validation.check_command("ResetWorkflowExecution", _cmd(reset_point="last", event_id=0))


def test_the_encode_cli_writes_a_reset_record() -> None:
    import subprocess
    import sys

    from kadence_protocol import avro

    done = subprocess.run(
        [sys.executable, "-m", "kadence.cli", "encode", "reset", "--workflow-id", "w", "--event-id", "9",
         "--reason", "bad deploy", "--request-id", "r-1", "--no-reapply-signals"],
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    name, record = avro.decode(bytes.fromhex(done.stdout.strip()))
    assert name == "ResetWorkflowExecution"
    assert record == {"namespace": "default", "workflow_id": "w", "run_id": None, "reset_point": "", "event_id": 9,
                      "reapply_signals": False, "reason": "bad deploy", "request_id": "r-1", "identity": "",
                      "reply_to": None}
    validation.check_command(name, record)


def test_the_callers_of_updates_the_old_run_had_not_finished_go_to_the_new_run() -> None:
    # before: accepted before the point (the copy holds it; its handler runs again in the new
    # run); after: accepted after the point; waiting: never accepted; done: completed.
    old = MutableState(namespace="ns", workflow_id="wf", run_id="old")
    new = MutableState(namespace="ns", workflow_id="wf", run_id="new")
    waiter = [UpdateWaiter(reply_to="fe", request_id="q", wait="completed")]
    for uid, stage in (("before", UpdateStage.ACCEPTED), ("after", UpdateStage.ACCEPTED),
                       ("waiting", UpdateStage.REQUESTED), ("done", UpdateStage.ACCEPTED)):
        old.update_requests[uid] = UpdateRequest(name="u", input="[1]", identity="c", stage=stage,
                                                 waiters=list(waiter), seq=1)
    old.updates = {"before": UpdateInfo("u", 5), "after": UpdateInfo("u", 9), "done": UpdateInfo("u", 6, True)}
    new.updates = {"before": UpdateInfo("u", 5), "done": UpdateInfo("u", 6, True)}
    after = [{"event_type": "WorkflowExecutionUpdateAccepted",
              "attributes": {"update_id": "after", "update_name": "u", "input": "[2]", "identity": "c"}}]
    _carry_updates(Transition(old, 0, 0), Transition(new, 0, 0), after)
    assert {uid: r.stage for uid, r in new.update_requests.items()} == {
        "before": UpdateStage.ACCEPTED, "after": UpdateStage.REQUESTED, "waiting": UpdateStage.REQUESTED}
    assert all(r.waiters == waiter for r in new.update_requests.values())
    assert list(old.update_requests) == ["done"]
