"""Pins the public names of the SDK so an accidental change of the API shows up here."""

from __future__ import annotations

import pytest

import kadence
from kadence import activity, client, exceptions, worker, workflow

pytestmark = pytest.mark.timeout(30)


def test_kadence_exports() -> None:
    assert sorted(kadence.__all__) == [
        "ActivityError",
        "ActivityNotFoundError",
        "ActivityTimeoutError",
        "ApplicationError",
        "CanceledError",
        "ChildWorkflowError",
        "Client",
        "FailureError",
        "KadenceError",
        "NonDeterminismError",
        "PayloadError",
        "QueryFailedError",
        "RPCError",
        "Replayer",
        "ResetPoint",
        "ResourceExhaustedError",
        "RetryPolicy",
        "RetryState",
        "TerminatedError",
        "Worker",
        "WorkflowAlreadyClosedError",
        "WorkflowAlreadyStartedError",
        "WorkflowFailureError",
        "WorkflowHandle",
        "WorkflowIDConflictPolicy",
        "WorkflowIDReusePolicy",
        "WorkflowNotFoundError",
        "WorkflowTaskError",
        "WorkflowTimeoutError",
        "WorkflowUpdateFailedError",
        "WorkflowUpdateHandle",
        "activity",
        "workflow",
    ]
    assert all(hasattr(kadence, name) for name in kadence.__all__)


def test_workflow_exports() -> None:
    assert sorted(workflow.__all__) == [
        "ActivityCancellationType",
        "ChildWorkflowHandle",
        "ContinueAsNewError",
        "ExternalWorkflowHandle",
        "HandlerUnfinishedPolicy",
        "Info",
        "ParentClosePolicy",
        "ParentInfo",
        "all_handlers_finished",
        "continue_as_new",
        "defn",
        "deprecate_patch",
        "execute_activity",
        "execute_activity_method",
        "execute_child_workflow",
        "execute_local_activity",
        "execute_local_activity_method",
        "get_external_workflow_handle",
        "info",
        "is_replaying",
        "memo",
        "now",
        "patched",
        "query",
        "random",
        "run",
        "side_effect",
        "signal",
        "sleep",
        "start_activity",
        "start_activity_method",
        "start_child_workflow",
        "start_local_activity",
        "start_local_activity_method",
        "update",
        "upsert_search_attributes",
        "uuid4",
        "wait_condition",
    ]
    assert all(hasattr(workflow, name) for name in workflow.__all__)


def test_activity_exports() -> None:
    assert sorted(activity.__all__) == ["Info", "defn", "heartbeat", "info", "is_cancel_requested",
                                          "raise_complete_async"]
    assert all(hasattr(activity, name) for name in activity.__all__)


def test_client_worker_exception_exports() -> None:
    assert sorted(client.__all__) == ["AsyncActivityHandle", "Client", "WorkflowExecution", "WorkflowExecutionCount",
                                      "WorkflowHandle", "WorkflowUpdateHandle"]
    assert worker.__all__ == ["Worker"]
    assert all(issubclass(getattr(exceptions, n), exceptions.KadenceError) for n in exceptions.__all__)


def test_interceptor_exports() -> None:
    from kadence import interceptor

    assert sorted(interceptor.__all__) == [
        "ActivityInboundInterceptor",
        "CancelWorkflowInput",
        "ClientOutboundInterceptor",
        "ContinueAsNewInput",
        "ExecuteActivityInput",
        "ExecuteWorkflowInput",
        "HandleQueryInput",
        "HandleSignalInput",
        "HandleUpdateInput",
        "Interceptor",
        "QueryWorkflowInput",
        "ScheduleActivityInput",
        "ScheduleLocalActivityInput",
        "SignalWorkflowInput",
        "SleepInput",
        "StartChildWorkflowInput",
        "StartWorkflowInput",
        "StartWorkflowUpdateInput",
        "TaskKind",
        "TerminateWorkflowInput",
        "WorkerTaskInput",
        "WorkerTaskInterceptor",
        "WorkflowInboundInterceptor",
        "WorkflowOutboundInterceptor",
    ]
    assert all(hasattr(interceptor, name) for name in interceptor.__all__)
