"""The validator's checks of child workflows: the two workflow task commands and the four
records history sends itself between shards on kadence.requests (services/history/children.py)."""

from __future__ import annotations

from typing import Any

import pytest

from kadence_protocol import avro
from services.common import validation as v

pytestmark = pytest.mark.timeout(30)


def _task(*commands: dict[str, Any]) -> dict[str, Any]:
    return {"namespace": "default", "workflow_id": "w", "run_id": "r", "scheduled_event_id": 3, "attempt": 1,
            "identity": "", "started_time": 0, "commands": list(commands)}


def _start_child(**kw: Any) -> dict[str, Any]:
    attributes = {"workflow_id": "c", "workflow_type": "Child", "task_queue": "", "input": "[1]",
                  "execution_timeout_ms": 0, "run_timeout_ms": 0, "workflow_task_timeout_ms": 0,
                  "parent_close_policy": "RequestCancel", **kw}
    return {"command_type": "StartChildWorkflowExecution", "attributes": attributes}


def _signal(**kw: Any) -> dict[str, Any]:
    attributes = {"workflow_id": "c", "run_id": None, "signal_name": "go", "input": None,
                  "child_workflow_only": True, **kw}
    return {"command_type": "SignalExternalWorkflowExecution", "attributes": attributes}


def _field(kind: str, record: dict[str, Any]) -> str:
    with pytest.raises(v.Invalid) as caught:
        v.check_command(kind, record)
    return caught.value.field


def test_an_external_handles_signal_without_a_run_id_passes() -> None:
    # The frontend drops a null run_id from a command: the current run of any workflow id.
    external = _signal(child_workflow_only=False)
    del external["attributes"]["run_id"]
    v.check_command("RespondWorkflowTaskCompleted", _task(external))


def test_the_child_commands_the_sdk_sends_pass() -> None:
    v.check_command("RespondWorkflowTaskCompleted", _task(_start_child(), _signal(), _signal(run_id="r2")))
    v.check_command("RespondWorkflowTaskCompleted", _task(_start_child(task_queue="q", parent_close_policy="Abandon")))


@pytest.mark.parametrize(("command", "field"), [
    (_start_child(workflow_id=""), "workflow_id"),
    (_start_child(workflow_type="a\x00b"), "workflow_type"),
    (_start_child(task_queue="q\x00"), "task_queue"),
    (_start_child(input='{"a": 1}'), "input"),
    (_start_child(input="[1"), "input"),
    (_start_child(execution_timeout_ms=-1), "execution_timeout_ms"),
    (_start_child(run_timeout_ms=2**62), "run_timeout_ms"),
    (_start_child(workflow_task_timeout_ms="10"), "workflow_task_timeout_ms"),
    (_start_child(parent_close_policy="Explode"), "parent_close_policy"),
    (_signal(workflow_id=""), "workflow_id"),
    (_signal(run_id="\x00"), "run_id"),
    (_signal(signal_name=""), "signal_name"),
    (_signal(input='"not an array"'), "input"),
])
def test_a_bad_child_command_is_refused_naming_its_field(command: dict[str, Any], field: str) -> None:
    assert _field("RespondWorkflowTaskCompleted", _task(command)) == f"commands[0].attributes.{field}"


def test_a_child_command_missing_a_field_names_it() -> None:
    command = _start_child()
    del command["attributes"]["workflow_type"]
    assert _field("RespondWorkflowTaskCompleted", _task(command)) == "commands[0].attributes.workflow_type"


def _start_request(**kw: Any) -> dict[str, Any]:
    return {"namespace": "default", "workflow_id": "c", "new_run_id": "run-c", "workflow_type": "Child",
            "task_queue": "q", "input": "[]", "execution_timeout_ms": 0, "run_timeout_ms": 0,
            "workflow_task_timeout_ms": 10000, "request_id": "child:run-p:5", "parent_namespace": "default",
            "parent_workflow_id": "p", "parent_run_id": "run-p", "parent_initiated_event_id": 5,
            "retry_policy": None, **kw}


def _signal_request(**kw: Any) -> dict[str, Any]:
    return {"namespace": "default", "workflow_id": "c", "run_id": None, "signal_name": "go", "input": "[1]",
            "request_id": "signal:run-p:7", "sender_namespace": "default", "sender_workflow_id": "p",
            "sender_run_id": "run-p", "sender_initiated_event_id": 7, "child_workflow_only": True, **kw}


def _notice(**kw: Any) -> dict[str, Any]:
    return {"namespace": "default", "workflow_id": "p", "run_id": "run-p", "initiated_event_id": 5,
            "kind": "Completed", "child_namespace": "default", "child_workflow_id": "c", "child_run_id": "run-c",
            "workflow_type": "Child", "result": '"ok"', "failure": None, "reason": "", "details": None, "cause": "",
            **kw}


def _policy(**kw: Any) -> dict[str, Any]:
    return {"namespace": "default", "workflow_id": "c", "parent_namespace": "default", "parent_workflow_id": "p",
            "parent_run_id": "run-p", "parent_initiated_event_id": 5, "policy": "RequestCancel",
            "reason": "parent p closed", "request_id": "RequestCancel:run-p:5", **kw}


def test_the_records_history_sends_between_shards_pass_and_encode() -> None:
    failure = {"message": "boom", "type": "Oops", "stack_trace": "", "non_retryable": True, "details": None}
    for kind, record in [("StartChildWorkflowExecution", _start_request()),
                         ("SignalExternalWorkflowExecution", _signal_request()),
                         ("SignalExternalWorkflowExecution", _signal_request(run_id="run-c")),
                         ("SignalExternalWorkflowExecution", _signal_request(child_workflow_only=False)),
                         ("ChildWorkflowNotice", _notice()),
                         ("ChildWorkflowNotice", _notice(kind="Failed", result=None, failure=failure)),
                         ("ChildWorkflowNotice", _notice(kind="StartFailed", child_run_id=None,
                                                         cause="WorkflowAlreadyStarted")),
                         ("ChildWorkflowNotice", _notice(kind="Canceled", details='["bye"]')),
                         ("ApplyParentClosePolicy", _policy()),
                         ("ApplyParentClosePolicy", _policy(policy="Terminate"))]:
        v.check_command(kind, record)
        assert avro.decode(avro.encode(kind, record)) == (kind, record)


@pytest.mark.parametrize(("kind", "record", "field"), [
    ("StartChildWorkflowExecution", _start_request(namespace="no/slash"), "namespace"),
    ("StartChildWorkflowExecution", _start_request(new_run_id=""), "new_run_id"),
    ("StartChildWorkflowExecution", _start_request(task_queue=""), "task_queue"),
    ("StartChildWorkflowExecution", _start_request(input="{}"), "input"),
    ("StartChildWorkflowExecution", _start_request(run_timeout_ms=-5), "run_timeout_ms"),
    ("StartChildWorkflowExecution", _start_request(request_id=""), "request_id"),
    ("StartChildWorkflowExecution", _start_request(parent_run_id=""), "parent_run_id"),
    ("StartChildWorkflowExecution", _start_request(parent_initiated_event_id=0), "parent_initiated_event_id"),
    ("SignalExternalWorkflowExecution", _signal_request(signal_name=""), "signal_name"),
    ("SignalExternalWorkflowExecution", _signal_request(input="1"), "input"),
    ("SignalExternalWorkflowExecution", _signal_request(sender_namespace=""), "sender_namespace"),
    ("SignalExternalWorkflowExecution", _signal_request(sender_initiated_event_id=-1), "sender_initiated_event_id"),
    # Another namespace than the record's: history would carry it into a run there (signed
    # ingress checks the record's namespace only).
    ("StartChildWorkflowExecution", _start_request(parent_namespace="bank"), "parent_namespace"),
    ("SignalExternalWorkflowExecution", _signal_request(sender_namespace="bank"), "sender_namespace"),
    ("ChildWorkflowNotice", _notice(child_namespace="shop"), "child_namespace"),
    ("ApplyParentClosePolicy", _policy(parent_namespace="bank"), "parent_namespace"),
    ("ChildWorkflowNotice", _notice(kind="Exploded"), "kind"),
    ("ChildWorkflowNotice", _notice(initiated_event_id=0), "initiated_event_id"),
    ("ChildWorkflowNotice", _notice(child_workflow_id=""), "child_workflow_id"),
    ("ChildWorkflowNotice", _notice(result="{not json"), "result"),
    ("ChildWorkflowNotice", _notice(failure={"message": 3}), "failure.message"),
    ("ChildWorkflowNotice", _notice(reason="x" * (v.MAX_TEXT_CHARS + 1)), "reason"),
    ("ApplyParentClosePolicy", _policy(policy="Ignore"), "policy"),
    ("ApplyParentClosePolicy", _policy(parent_workflow_id=""), "parent_workflow_id"),
    ("ApplyParentClosePolicy", _policy(reason="\x00"), "reason"),
])
def test_a_bad_record_between_shards_is_refused_naming_its_field(kind: str, record: dict[str, Any],
                                                                 field: str) -> None:
    assert _field(kind, record) == field


def test_the_enum_symbols_checked_are_the_schemas() -> None:
    current = avro.schemas().current
    assert tuple(current["kadence.ParentClosePolicy"]["symbols"]) == v.PARENT_CLOSE_POLICIES
    notice = {f["name"]: f["type"] for f in current["kadence.ChildWorkflowNotice"]["fields"]}
    assert tuple(notice["kind"]["symbols"]) == v.NOTICE_KINDS
