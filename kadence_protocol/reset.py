"""What the SDK and the server agree on about resetting a run (``ResetWorkflowExecution``).

A reset names the workflow task a new run goes on from: the run's first task, the last
one it completed, or one of the task's events by id (:class:`ResetPoint`). History
records the end of the copied history as a ``WorkflowTaskFailed`` with cause
:data:`RESET_CAUSE`, and refuses a reset it cannot make with :data:`INVALID_RESET`.
"""

from __future__ import annotations

from enum import StrEnum

from .enums import WorkflowTaskFailedCause


class ResetPoint(StrEnum):
    """Which workflow task ``ResetWorkflowExecution.reset_point`` names."""

    EVENT_ID = ""  # the task one of whose events ``event_id`` names
    FIRST = "first"  # the run's first workflow task
    LAST = "last"  # the last workflow task the run completed


# The cause of the WorkflowTaskFailed a reset writes after the copied events.
RESET_CAUSE = WorkflowTaskFailedCause.RESET_WORKFLOW
# The error type history answers a reset it cannot make with (HTTP 400).
INVALID_RESET = "InvalidResetPoint"
# The events that name a workflow task a run may be reset to.
RESET_EVENT_TYPES = ("WorkflowTaskStarted", "WorkflowTaskCompleted", "WorkflowTaskFailed", "WorkflowTaskTimedOut")
