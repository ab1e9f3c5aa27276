"""The domain's closed sets of names, shared by the SDK's workflow runner and the server's fold.

Every enum is a :class:`~enum.StrEnum`: a member *is* the string that travels on the wire
(Avro enum symbols, string fields), sits in stored JSON (snapshots) and in PostgreSQL
columns, so ``EventType.TIMER_FIRED == "TimerFired"`` and old data needs no conversion.

The enums that mirror an Avro enum (:data:`AVRO_ENUMS`) are checked against
``schemas/*.avsc`` by ``tests/unit/kadence_protocol/test_enums.py``: a schema change without the
matching change here fails that test. The others name string fields the schemas leave
open (a timeout type, a cause) or values only the server keeps (timer kinds, run statuses);
the new migration's CHECK constraints pin the ones stored in columns.
"""

from __future__ import annotations

from enum import StrEnum


class EventType(StrEnum):
    """``HistoryEvent.event_type`` (Avro enum ``kadence.EventType``)."""

    WORKFLOW_EXECUTION_STARTED = "WorkflowExecutionStarted"
    WORKFLOW_EXECUTION_COMPLETED = "WorkflowExecutionCompleted"
    WORKFLOW_EXECUTION_FAILED = "WorkflowExecutionFailed"
    WORKFLOW_EXECUTION_TIMED_OUT = "WorkflowExecutionTimedOut"
    WORKFLOW_EXECUTION_TERMINATED = "WorkflowExecutionTerminated"
    WORKFLOW_EXECUTION_CONTINUED_AS_NEW = "WorkflowExecutionContinuedAsNew"
    WORKFLOW_EXECUTION_SIGNALED = "WorkflowExecutionSignaled"
    WORKFLOW_TASK_SCHEDULED = "WorkflowTaskScheduled"
    WORKFLOW_TASK_STARTED = "WorkflowTaskStarted"
    WORKFLOW_TASK_COMPLETED = "WorkflowTaskCompleted"
    WORKFLOW_TASK_FAILED = "WorkflowTaskFailed"
    WORKFLOW_TASK_TIMED_OUT = "WorkflowTaskTimedOut"
    ACTIVITY_TASK_SCHEDULED = "ActivityTaskScheduled"
    ACTIVITY_TASK_STARTED = "ActivityTaskStarted"
    ACTIVITY_TASK_COMPLETED = "ActivityTaskCompleted"
    ACTIVITY_TASK_FAILED = "ActivityTaskFailed"
    ACTIVITY_TASK_TIMED_OUT = "ActivityTaskTimedOut"
    TIMER_STARTED = "TimerStarted"
    TIMER_FIRED = "TimerFired"
    TIMER_CANCELED = "TimerCanceled"
    MARKER_RECORDED = "MarkerRecorded"
    WORKFLOW_EXECUTION_CANCEL_REQUESTED = "WorkflowExecutionCancelRequested"
    WORKFLOW_EXECUTION_CANCELED = "WorkflowExecutionCanceled"
    ACTIVITY_TASK_CANCEL_REQUESTED = "ActivityTaskCancelRequested"
    ACTIVITY_TASK_CANCELED = "ActivityTaskCanceled"
    START_CHILD_WORKFLOW_EXECUTION_INITIATED = "StartChildWorkflowExecutionInitiated"
    START_CHILD_WORKFLOW_EXECUTION_FAILED = "StartChildWorkflowExecutionFailed"
    CHILD_WORKFLOW_EXECUTION_STARTED = "ChildWorkflowExecutionStarted"
    CHILD_WORKFLOW_EXECUTION_COMPLETED = "ChildWorkflowExecutionCompleted"
    CHILD_WORKFLOW_EXECUTION_FAILED = "ChildWorkflowExecutionFailed"
    CHILD_WORKFLOW_EXECUTION_TIMED_OUT = "ChildWorkflowExecutionTimedOut"
    CHILD_WORKFLOW_EXECUTION_TERMINATED = "ChildWorkflowExecutionTerminated"
    CHILD_WORKFLOW_EXECUTION_CANCELED = "ChildWorkflowExecutionCanceled"
    SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED = "SignalExternalWorkflowExecutionInitiated"
    EXTERNAL_WORKFLOW_EXECUTION_SIGNALED = "ExternalWorkflowExecutionSignaled"
    SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_FAILED = "SignalExternalWorkflowExecutionFailed"
    WORKFLOW_EXECUTION_UPDATE_ACCEPTED = "WorkflowExecutionUpdateAccepted"
    WORKFLOW_EXECUTION_UPDATE_COMPLETED = "WorkflowExecutionUpdateCompleted"


class CommandType(StrEnum):
    """``Command.command_type``: what a workflow task decided (Avro enum ``kadence.CommandType``)."""

    SCHEDULE_ACTIVITY_TASK = "ScheduleActivityTask"
    START_TIMER = "StartTimer"
    CANCEL_TIMER = "CancelTimer"
    COMPLETE_WORKFLOW_EXECUTION = "CompleteWorkflowExecution"
    FAIL_WORKFLOW_EXECUTION = "FailWorkflowExecution"
    CONTINUE_AS_NEW_WORKFLOW_EXECUTION = "ContinueAsNewWorkflowExecution"
    RECORD_MARKER = "RecordMarker"
    REQUEST_CANCEL_ACTIVITY_TASK = "RequestCancelActivityTask"
    CANCEL_WORKFLOW_EXECUTION = "CancelWorkflowExecution"
    START_CHILD_WORKFLOW_EXECUTION = "StartChildWorkflowExecution"
    SIGNAL_EXTERNAL_WORKFLOW_EXECUTION = "SignalExternalWorkflowExecution"
    ACCEPT_WORKFLOW_UPDATE = "AcceptWorkflowUpdate"
    REJECT_WORKFLOW_UPDATE = "RejectWorkflowUpdate"
    COMPLETE_WORKFLOW_UPDATE = "CompleteWorkflowUpdate"


class ParentClosePolicy(StrEnum):
    """What becomes of an open child when its parent closes (Avro enum ``kadence.ParentClosePolicy``)."""

    TERMINATE = "Terminate"
    REQUEST_CANCEL = "RequestCancel"
    ABANDON = "Abandon"


class ChildWorkflowNoticeKind(StrEnum):
    """``ChildWorkflowNotice.kind``: what became of a child or of a signal to it."""

    STARTED = "Started"
    START_FAILED = "StartFailed"
    COMPLETED = "Completed"
    FAILED = "Failed"
    TIMED_OUT = "TimedOut"
    TERMINATED = "Terminated"
    CANCELED = "Canceled"
    SIGNALED = "Signaled"
    SIGNAL_FAILED = "SignalFailed"


# Each enum that mirrors an Avro enum, by the Avro enum's full name.
AVRO_ENUMS: dict[str, type[StrEnum]] = {
    "kadence.EventType": EventType,
    "kadence.CommandType": CommandType,
    "kadence.ParentClosePolicy": ParentClosePolicy,
    "kadence.ChildWorkflowNoticeKind": ChildWorkflowNoticeKind,
}


class RunStatus(StrEnum):
    """A run's status: ``executions.status``, ``current_executions.status``, ``visibility.status``."""

    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"
    TIMED_OUT = "TimedOut"
    TERMINATED = "Terminated"
    CONTINUED_AS_NEW = "ContinuedAsNew"
    CANCELED = "Canceled"

    @property
    def closed(self) -> bool:
        return self is not RunStatus.RUNNING


CLOSED_STATUSES = frozenset(s for s in RunStatus if s.closed)

# The event that closes a run with each closed status, and back.
CLOSE_EVENT: dict[RunStatus, EventType] = {
    RunStatus.COMPLETED: EventType.WORKFLOW_EXECUTION_COMPLETED,
    RunStatus.FAILED: EventType.WORKFLOW_EXECUTION_FAILED,
    RunStatus.TIMED_OUT: EventType.WORKFLOW_EXECUTION_TIMED_OUT,
    RunStatus.TERMINATED: EventType.WORKFLOW_EXECUTION_TERMINATED,
    RunStatus.CONTINUED_AS_NEW: EventType.WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
    RunStatus.CANCELED: EventType.WORKFLOW_EXECUTION_CANCELED,
}
CLOSE_STATUS: dict[EventType, RunStatus] = {e: s for s, e in CLOSE_EVENT.items()}


class TimerKind(StrEnum):
    """``timers.kind``: what a durable timer row of history is for."""

    USER_TIMER = "user_timer"  # a workflow's StartTimer; ref: its TimerStarted event id
    WORKFLOW_TIMEOUT = "wf_timeout"  # the run's execution or run timeout
    WORKFLOW_TASK_TIMEOUT = "wt_timeout"  # ref: the workflow task's scheduled event id
    WORKFLOW_TASK_RETRY = "wt_retry"  # the backoff before a failed workflow task's next attempt
    WORKFLOW_BACKOFF = "wf_backoff"  # a retried run's backoff before its first workflow task
    ACTIVITY_SCHEDULE_TO_CLOSE = "act_s2c"  # ref (all act_*): the activity's scheduled event id
    ACTIVITY_SCHEDULE_TO_START = "act_s2s"
    ACTIVITY_START_TO_CLOSE = "act_stc"
    ACTIVITY_HEARTBEAT = "act_hb"
    ACTIVITY_RETRY = "act_retry"


ACTIVITY_TIMER_KINDS = (TimerKind.ACTIVITY_SCHEDULE_TO_CLOSE, TimerKind.ACTIVITY_SCHEDULE_TO_START,
                        TimerKind.ACTIVITY_START_TO_CLOSE, TimerKind.ACTIVITY_HEARTBEAT, TimerKind.ACTIVITY_RETRY)


class TimeoutType(StrEnum):
    """``ActivityTaskTimedOutEventAttributes.timeout_type``: which of an activity's timeouts fired."""

    SCHEDULE_TO_CLOSE = "ScheduleToClose"
    SCHEDULE_TO_START = "ScheduleToStart"
    START_TO_CLOSE = "StartToClose"
    HEARTBEAT = "Heartbeat"

    @property
    def retryable(self) -> bool:
        """Whether another attempt may follow (the schedule timeouts bound the whole activity)."""
        return self in (TimeoutType.START_TO_CLOSE, TimeoutType.HEARTBEAT)


class ActivityState(StrEnum):
    """Where a pending activity's current attempt stands (in a run's mutable state)."""

    SCHEDULED = "Scheduled"
    STARTED = "Started"


class ChildState(StrEnum):
    """Where a pending child workflow stands (in its parent's mutable state)."""

    INITIATED = "Initiated"
    STARTED = "Started"


class TaskKind(StrEnum):
    """``task_backlog.kind``: which kind of task a matching queue holds."""

    WORKFLOW = "workflow"
    ACTIVITY = "activity"


class WorkflowTaskFailedCause(StrEnum):
    """``WorkflowTaskFailedEventAttributes.cause``. A worker's causes are recorded as it gave
    them (the SDK's are listed); history's own are told apart (see services/history/unseen.py)."""

    # Given by the SDK's worker.
    NON_DETERMINISM = "NonDeterminism"
    WORKFLOW_ERROR = "WorkflowError"
    PAYLOAD_TOO_LARGE = "PayloadTooLarge"
    # Recorded by history.
    BAD_COMMAND = "BadCommand"
    UNHANDLED_COMMAND = "UnhandledCommand"


class UpdateStage(StrEnum):
    """Where an update stands; a caller waits for ``ACCEPTED`` or ``COMPLETED``."""

    REQUESTED = "requested"  # waiting to be delivered and validated
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    REJECTED = "rejected"
