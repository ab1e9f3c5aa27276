"""The workflow-id and parent-close policies: values of command fields that the SDK sends
and the server acts on (the ``.avsc`` enums' symbols)."""

from __future__ import annotations

from enum import StrEnum

# The parent-close policy is an Avro enum: defined with the others in enums.py.
from .enums import ParentClosePolicy

__all__ = ["ParentClosePolicy", "WorkflowIDConflictPolicy", "WorkflowIDReusePolicy"]


class WorkflowIDReusePolicy(StrEnum):
    """Whether a start may reuse a workflow id whose last run is closed (Temporal's policies).

    ``ALLOW_DUPLICATE`` (default): always. ``ALLOW_DUPLICATE_FAILED_ONLY``: only when the last
    run failed, timed out, was terminated or canceled. ``REJECT_DUPLICATE``: never.
    ``TERMINATE_IF_RUNNING``: always, and a running run of the id is terminated first.
    A refused start raises WorkflowAlreadyStartedError.
    """

    ALLOW_DUPLICATE = "AllowDuplicate"
    ALLOW_DUPLICATE_FAILED_ONLY = "AllowDuplicateFailedOnly"
    REJECT_DUPLICATE = "RejectDuplicate"
    TERMINATE_IF_RUNNING = "TerminateIfRunning"


class WorkflowIDConflictPolicy(StrEnum):
    """What a start does when a run of the workflow id is running.

    ``FAIL`` (default): WorkflowAlreadyStartedError (a retry with the same request id gets
    the run it started). ``USE_EXISTING``: the handle of the running run. ``TERMINATE_EXISTING``:
    the running run is terminated and a new one starts.
    """

    FAIL = "Fail"
    USE_EXISTING = "UseExisting"
    TERMINATE_EXISTING = "TerminateExisting"
