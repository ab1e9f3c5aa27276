"""Kadence: durable workflows in Python.

The SDK is this package: :class:`Client` to start and inspect workflows, :class:`Worker`
to run them, the :mod:`kadence.workflow` and :mod:`kadence.activity` modules to write them.
"""

from kadence import activity, workflow
from kadence._client import Client, WorkflowHandle, WorkflowUpdateHandle
from kadence._worker.worker import Worker
from kadence.common import ResetPoint, RetryPolicy, RetryState, WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from kadence.exceptions import (
    ActivityError,
    ActivityNotFoundError,
    ActivityTimeoutError,
    ApplicationError,
    CanceledError,
    ChildWorkflowError,
    FailureError,
    KadenceError,
    NonDeterminismError,
    PayloadError,
    QueryFailedError,
    ResourceExhaustedError,
    RPCError,
    TerminatedError,
    WorkflowAlreadyClosedError,
    WorkflowAlreadyStartedError,
    WorkflowFailureError,
    WorkflowNotFoundError,
    WorkflowTaskError,
    WorkflowTimeoutError,
    WorkflowUpdateFailedError,
)
from kadence.replay import Replayer

__all__ = [
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
