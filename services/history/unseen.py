"""No accepted input goes unseen: a workflow task that would close its run while inputs it
did not see wait is refused (Temporal's rule).

A workflow task brings its worker the events up to its ``WorkflowTaskScheduled``; a signal
(or activity result, or timer firing) recorded after that waits for the next task
(``MutableState.inputs_pending``). If the task's commands close the run (complete, fail,
continue as new), there would be no next task, and the inputs would be recorded and never
seen by workflow code. So history refuses the whole task, none of its commands applied: it
records ``WorkflowTaskFailed`` with cause ``UnhandledCommand`` and schedules a new task at
once, which brings those inputs; the worker then runs the workflow again with them.

The same holds for a task that cancels a timer which fired after the task was scheduled
(its ``TimerFired`` waits unseen): history has no timer left to cancel, so the command
would have no event and a replay of the task would not match; refused whole, the new task
brings the firing. (Cancelling a sleeping workflow makes this race likely.)

A refusal is not the worker's failure: the fold does not count it towards the task's
attempts, so the new task is attempt 1 and no retry backoff applies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from types import ModuleType
from typing import TYPE_CHECKING, Any

from kadence_protocol.enums import CommandType
from kadence_protocol.reset import RESET_CAUSE

if TYPE_CHECKING:  # the fold (state.py) imports this module
    from .state import MutableState


def _updates() -> ModuleType:
    from . import updates  # imports the fold, which imports this module

    return updates


class HistoryCause(StrEnum):
    """``WorkflowTaskFailed`` causes history itself records (a worker's are recorded as it gave them)."""

    UNHANDLED_COMMAND = "UnhandledCommand"
    RESET_WORKFLOW = RESET_CAUSE  # the end of a reset's copied history (reset.py)


# The commands after which the run is closed: no further workflow task would come.
CLOSING_COMMANDS = frozenset({CommandType.COMPLETE_WORKFLOW_EXECUTION, CommandType.FAIL_WORKFLOW_EXECUTION,
                              CommandType.CONTINUE_AS_NEW_WORKFLOW_EXECUTION,
                              CommandType.CANCEL_WORKFLOW_EXECUTION})


def closes_run(commands: Iterable[Mapping[str, Any]]) -> bool:
    return any(c["command_type"] in CLOSING_COMMANDS for c in commands)


def refused(state: MutableState, commands: Iterable[Mapping[str, Any]]) -> bool:
    """Whether a completion with ``commands`` of the run's outstanding task must be refused:
    it closes the run, or cancels a timer that has fired, while inputs recorded after the
    task was scheduled wait unseen."""
    commands = list(commands)
    if closes_run(commands) and _updates().unanswered(state, commands):
        return True  # an update request waits that this task did not answer
    if not state.inputs_pending:
        return False
    return closes_run(commands) or any(
        c["command_type"] == CommandType.CANCEL_TIMER and c["attributes"]["timer_id"] not in state.timers
        for c in commands)


def refusal_failure() -> dict[str, Any]:
    """The failure recorded with a refused task, for whoever reads the history."""
    return {"message": "the workflow task closes the run, but new inputs (signals, results, updates) arrived after"
                       " it was scheduled that it did not see; a new workflow task delivers them",
            "type": HistoryCause.UNHANDLED_COMMAND.value, "stack_trace": "", "non_retryable": False,
            "details": None}


def worker_cause(cause: str) -> str:
    """The cause a worker reported, as recorded: never one of history's own, which the fold
    treats differently (a worker could otherwise fail a task without it counting)."""
    return f"Worker{cause}" if cause in {c.value for c in HistoryCause} else cause


def counts_as_attempt(cause: str) -> bool:
    """Whether a failed workflow task counts towards the attempts (and backoff) of the next."""
    return cause != HistoryCause.UNHANDLED_COMMAND
