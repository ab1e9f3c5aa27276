"""Child workflows in the SDK, driven through synthetic histories: the commands a parent
decides, the events that resolve its handle, typed errors with their cause, the failure
chain through history, and replay."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kadence import workflow
from kadence._failure import exception_from_failure
from kadence.exceptions import (
    ApplicationError,
    CanceledError,
    ChildWorkflowError,
    NonDeterminismError,
    TerminatedError,
)
from tests.unit._fake_history import Driver, FakeHistory, new_runner

pytestmark = pytest.mark.timeout(30)


@workflow.defn
class Child:
    @workflow.signal
    def go(self, n: int) -> None:
        pass

    @workflow.run
    async def run(self, n: int) -> int:
        return n


@workflow.defn
class Parent:
    @workflow.run
    async def run(self, n: int) -> str:
        handle = await workflow.start_child_workflow(Child.run, n, id="kid",
                                                     parent_close_policy=workflow.ParentClosePolicy.ABANDON)
        await handle.signal(Child.go, 5)
        try:
            result = await handle
        except ChildWorkflowError as err:
            return f"{type(err.cause).__name__}: {err.cause.message}"
        return f"got {result}"


@workflow.defn(name="Parent")
class ParentChanged:
    @workflow.run
    async def run(self, n: int) -> str:
        return str(await workflow.execute_child_workflow(Child, n, id="another-kid"))


@workflow.defn
class Careless:
    @workflow.run
    async def run(self) -> Any:
        return await workflow.execute_child_workflow("Child", 1, id="kid")


def _initiated(history: FakeHistory) -> int:
    return max(e["event_id"] for e in history.events if e["event_type"] == "StartChildWorkflowExecutionInitiated")


def _child_event(history: FakeHistory, kind: str, **attributes: Any) -> None:
    history.add(kind, initiated_event_id=_initiated(history), namespace="default", workflow_id="kid",
                workflow_type="Child", **attributes)


def _run_to_signal(history: FakeHistory) -> Driver:
    driver = Driver(Parent, history)
    (start,) = driver.step()
    assert start["command_type"] == "StartChildWorkflowExecution"
    assert start["attributes"] | {"input": json.loads(start["attributes"]["input"])} == {
        "workflow_id": "kid", "workflow_type": "Child", "task_queue": "", "input": [3], "execution_timeout_ms": 0,
        "run_timeout_ms": 0, "workflow_task_timeout_ms": 0, "parent_close_policy": "Abandon", "retry_policy": None}
    assert driver.next_task() == []  # nothing happens until the child has started
    _child_event(history, "ChildWorkflowExecutionStarted", run_id="kid-run")
    (signal,) = driver.next_task()
    assert signal["command_type"] == "SignalExternalWorkflowExecution"
    assert signal["attributes"]["run_id"] == "kid-run" and signal["attributes"]["signal_name"] == "go"
    signal_initiated = max(e["event_id"] for e in history.events
                           if e["event_type"] == "SignalExternalWorkflowExecutionInitiated")
    history.add("ExternalWorkflowExecutionSignaled", initiated_event_id=signal_initiated,
                namespace="default", workflow_id="kid", run_id="kid-run")
    assert driver.next_task() == []  # waiting for the result
    return driver


def test_the_parent_gets_the_childs_result_and_replays_it() -> None:
    history = FakeHistory("Parent", 3)
    driver = _run_to_signal(history)
    _child_event(history, "ChildWorkflowExecutionCompleted", run_id="kid-run", started_event_id=0, result="3")
    (done,) = driver.next_task()
    assert done == {"command_type": "CompleteWorkflowExecution", "attributes": {"result": '"got 3"'}}
    replay = new_runner(Parent, history)
    assert replay.apply(history.events, run_live=False) == [] and replay.finished


def test_a_child_failure_reaches_the_parent_as_a_child_workflow_error_with_its_cause() -> None:
    history = FakeHistory("Parent", 3)
    driver = _run_to_signal(history)
    failure = {"message": "boom", "type": "Oops", "stack_trace": "", "non_retryable": True, "details": None}
    _child_event(history, "ChildWorkflowExecutionFailed", run_id="kid-run", started_event_id=0, failure=failure)
    (done,) = driver.next_task()
    assert done["attributes"]["result"] == '"ApplicationError: boom"'


def test_a_terminated_child_raises_with_a_terminated_cause() -> None:
    history = FakeHistory("Parent", 3)
    driver = _run_to_signal(history)
    _child_event(history, "ChildWorkflowExecutionTerminated", run_id="kid-run", started_event_id=0, reason="ops")
    (done,) = driver.next_task()
    assert done["attributes"]["result"] == '"TerminatedError: workflow terminated: ops"'


def test_an_uncaught_start_failure_fails_the_parent_with_the_chain_kept() -> None:
    history = FakeHistory("Careless")
    driver = Driver(Careless, history)
    driver.step()
    _child_event(history, "StartChildWorkflowExecutionFailed", cause="WorkflowAlreadyStarted")
    (failed,) = driver.next_task()
    assert failed["command_type"] == "FailWorkflowExecution"
    error = exception_from_failure(failed["attributes"]["failure"])
    assert isinstance(error, ChildWorkflowError) and error.workflow_id == "kid" and error.run_id is None
    assert isinstance(error.cause, ApplicationError) and error.cause.type == "WorkflowAlreadyStarted"


def test_a_changed_child_is_non_determinism_on_replay() -> None:
    history = FakeHistory("Parent", 3)
    _run_to_signal(history)
    with pytest.raises(NonDeterminismError, match="another-kid"):
        new_runner(ParentChanged, history).apply(history.events, run_live=False)


def test_child_errors_round_trip_through_a_failure() -> None:
    from kadence._failure import failure_from_exception

    error = ChildWorkflowError("child failed", workflow_id="k", workflow_type="Child", run_id="r",
                               initiated_event_id=5, cause=TerminatedError("why"))
    again = exception_from_failure(failure_from_exception(error))
    assert isinstance(again, ChildWorkflowError) and again.initiated_event_id == 5 and again.run_id == "r"
    assert isinstance(again.cause, TerminatedError) and again.cause.reason == "why"


def test_a_canceled_child_raises_with_a_canceled_cause() -> None:
    history = FakeHistory("Parent", 3)
    driver = _run_to_signal(history)
    _child_event(history, "ChildWorkflowExecutionCanceled", run_id="kid-run", started_event_id=0, details=None)
    (done,) = driver.next_task()
    assert done["attributes"]["result"] == '"CanceledError: workflow canceled"'


def test_a_canceled_cause_keeps_its_class_and_details_through_a_failure() -> None:
    from kadence._failure import failure_from_exception

    error = ChildWorkflowError("child was canceled", workflow_id="k", workflow_type="Child", run_id="r",
                               initiated_event_id=5, cause=CanceledError("workflow canceled", {"why": "stop"}))
    again = exception_from_failure(failure_from_exception(error))
    assert isinstance(again, ChildWorkflowError) and isinstance(again.cause, CanceledError)
    assert again.cause.details == ({"why": "stop"},) and again.cause.message == "workflow canceled"


@workflow.defn
class Awaiting:
    @workflow.run
    async def run(self) -> int:
        return await workflow.execute_child_workflow(Child.run, 1, id="kid")


def _command_types(commands: list[dict[str, Any]]) -> list[str]:
    return [c["command_type"] for c in commands]


def test_a_cancelled_wait_for_a_childs_result_cancels_the_child_and_waits_for_its_close() -> None:
    history = FakeHistory("Awaiting")
    driver = Driver(Awaiting, history)
    assert _command_types(driver.step()) == ["StartChildWorkflowExecution"]
    _child_event(history, "ChildWorkflowExecutionStarted", run_id="kid-run")
    assert driver.next_task() == []
    history.add("WorkflowExecutionCancelRequested", reason="", identity="", request_id="c")
    (cancel,) = driver.next_task()  # the child is asked to cancel; the parent waits for it
    assert cancel["command_type"] == "SignalExternalWorkflowExecution"
    assert (cancel["attributes"]["signal_name"], cancel["attributes"]["run_id"]) == ("__cancel_child", "kid-run")
    history.add("ExternalWorkflowExecutionSignaled", initiated_event_id=history.events[-1]["event_id"],
                namespace="default", workflow_id="kid", run_id="kid-run")
    assert driver.next_task() == []
    _child_event(history, "ChildWorkflowExecutionCanceled", run_id="kid-run", details=None)
    assert _command_types(driver.next_task()) == ["CancelWorkflowExecution"]


def test_a_wait_for_a_childs_start_cancelled_cancels_the_child_once_it_started() -> None:
    history = FakeHistory("Awaiting")
    driver = Driver(Awaiting, history)
    driver.step()
    history.add("WorkflowExecutionCancelRequested", reason="", identity="", request_id="c")
    assert driver.next_task() == []  # the start is on its way: the parent waits for it
    _child_event(history, "ChildWorkflowExecutionStarted", run_id="kid-run")
    assert [c["attributes"].get("signal_name") for c in driver.next_task()] == ["__cancel_child"]
    _child_event(history, "ChildWorkflowExecutionCanceled", run_id="kid-run", details=None)
    assert _command_types(driver.next_task()) == ["CancelWorkflowExecution"]


@workflow.defn
class Neighbour:
    @workflow.run
    async def run(self) -> str:
        other = workflow.get_external_workflow_handle("other")
        await other.signal(Child.go, 1)
        try:
            await other.cancel()
        except ApplicationError as err:
            return f"{err.type}: {err.message}"
        return "canceled"


def _last_signal_initiated(history: FakeHistory) -> int:
    return max(int(e["event_id"]) for e in history.events
               if e["event_type"] == "SignalExternalWorkflowExecutionInitiated")


def test_an_external_handle_signals_then_cancels_any_workflow_and_replays() -> None:
    history = FakeHistory("Neighbour")
    driver = Driver(Neighbour, history)
    (signal,) = driver.step()
    assert signal == {"command_type": "SignalExternalWorkflowExecution",
                      "attributes": {"workflow_id": "other", "run_id": None, "signal_name": "go", "input": "[1]",
                                     "child_workflow_only": False}}
    assert driver.next_task() == []  # the await waits until the target's shard recorded it
    history.add("ExternalWorkflowExecutionSignaled", initiated_event_id=_last_signal_initiated(history),
                namespace="default", workflow_id="other", run_id="other-run")
    (cancel,) = driver.next_task()
    assert (cancel["attributes"]["signal_name"], cancel["attributes"]["child_workflow_only"]) == ("__cancel_child", False)
    history.add("SignalExternalWorkflowExecutionFailed", initiated_event_id=_last_signal_initiated(history),
                namespace="default", workflow_id="other", run_id=None, cause="WorkflowNotFound")
    (done,) = driver.next_task()
    assert done == {"command_type": "CompleteWorkflowExecution", "attributes": {
        "result": json.dumps("SignalExternalWorkflowExecutionFailed: signal to workflow other failed: WorkflowNotFound")}}
    replay = new_runner(Neighbour, history)
    assert replay.apply(history.events, run_live=False) == [] and replay.finished


@workflow.defn
class SelfCanceller:
    @workflow.run
    async def run(self, run_id: str | None) -> str:
        mine = workflow.get_external_workflow_handle(workflow.info().workflow_id, run_id=run_id)
        try:
            await mine.cancel()
        except ApplicationError as err:
            await mine.signal(Child.go, 1)  # a signal to itself is still delivered
            return f"{err.type}: {err.message}"
        return "cancelled itself"


@pytest.mark.parametrize("run_id", [None, "run-1"], ids=["current-run", "own-run-id"])
def test_an_external_handle_on_its_own_run_refuses_to_cancel_it_at_the_call_and_replays(run_id: str | None) -> None:
    # Temporal refuses a workflow cancelling itself through an external handle: raised at the
    # call, no command decided (before, a cancel signal went out and the run cancelled itself).
    history = FakeHistory("SelfCanceller", run_id)
    driver = Driver(SelfCanceller, history)
    (signal,) = driver.step()
    assert (signal["command_type"], signal["attributes"]["signal_name"]) == ("SignalExternalWorkflowExecution", "go")
    history.add("ExternalWorkflowExecutionSignaled", initiated_event_id=_last_signal_initiated(history),
                namespace="default", workflow_id="wf-1", run_id="run-1")
    (done,) = driver.next_task()
    assert done["command_type"] == "CompleteWorkflowExecution"
    assert json.loads(done["attributes"]["result"]).startswith(
        "CancelExternalWorkflowExecutionFailed: a workflow cannot cancel itself through an external handle")
    replay = new_runner(SelfCanceller, history)
    assert replay.apply(history.events, run_live=False) == [] and replay.finished


def test_an_external_handle_on_another_run_of_its_own_id_may_cancel_it() -> None:
    # An earlier run of the same workflow id is another run: the cancel goes out (and fails
    # in history when that run is closed).
    history = FakeHistory("SelfCanceller", "run-0")
    (cancel,) = Driver(SelfCanceller, history).step()
    assert (cancel["attributes"]["workflow_id"], cancel["attributes"]["run_id"],
            cancel["attributes"]["signal_name"]) == ("wf-1", "run-0", "__cancel_child")
