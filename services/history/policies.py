"""Start policies: what a start does when runs of its workflow id exist already.

Pure decisions over the current run's state (engine.start_workflow applies them): the id
reuse policy when the last run is closed, the id conflict policy when one is running.
The policy names are the kadence.common enums' values; '' is the default of each.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from kadence_protocol.policies import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from .state import MutableState

# A last run that closed in one of these counts as failed for ALLOW_DUPLICATE_FAILED_ONLY.
FAILED_STATUSES = frozenset({"Failed", "TimedOut", "Terminated", "Canceled"})


class Decision(enum.Enum):
    START = "start"              # start a new run
    TERMINATE_AND_START = "terminate_and_start"  # terminate the running run, then start
    USE_EXISTING = "use_existing"  # answer with the running run
    REFUSE = "refuse"            # WorkflowAlreadyStarted


@dataclass(frozen=True)
class Outcome:
    decision: Decision
    reason: str = ""  # why a start is refused, or why the running run is terminated


def reuse_policy(value: str) -> WorkflowIDReusePolicy:
    return WorkflowIDReusePolicy(value) if value else WorkflowIDReusePolicy.ALLOW_DUPLICATE


def conflict_policy(value: str) -> WorkflowIDConflictPolicy:
    return WorkflowIDConflictPolicy(value) if value else WorkflowIDConflictPolicy.FAIL


def decide(current: MutableState | None, reuse: WorkflowIDReusePolicy,
           conflict: WorkflowIDConflictPolicy) -> Outcome:
    """What a start (not a retry of the start of ``current``) does given the id's current run."""
    if current is None:
        return Outcome(Decision.START)
    wid = current.workflow_id
    if current.running:
        if conflict is WorkflowIDConflictPolicy.USE_EXISTING:
            return Outcome(Decision.USE_EXISTING)
        if conflict is WorkflowIDConflictPolicy.TERMINATE_EXISTING:
            return Outcome(Decision.TERMINATE_AND_START,
                           "terminated by a new start (id conflict policy TerminateExisting)")
        if reuse is WorkflowIDReusePolicy.TERMINATE_IF_RUNNING:
            return Outcome(Decision.TERMINATE_AND_START,
                           "terminated by a new start (id reuse policy TerminateIfRunning)")
        return Outcome(Decision.REFUSE, f"workflow {wid!r} is already running as run {current.run_id}")
    if reuse is WorkflowIDReusePolicy.REJECT_DUPLICATE:
        return Outcome(Decision.REFUSE, f"workflow {wid!r} has run {current.run_id} already"
                                        " (id reuse policy RejectDuplicate)")
    if reuse is WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY and current.status not in FAILED_STATUSES:
        return Outcome(Decision.REFUSE, f"workflow {wid!r}'s last run {current.run_id} closed as {current.status}"
                                        " (id reuse policy AllowDuplicateFailedOnly)")
    return Outcome(Decision.START)
