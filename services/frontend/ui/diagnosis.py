"""Why is this run not moving? Plain-language hints from a run's description and history.

The run page shows these first, so an operator learns what a run waits for (a worker, a
retrying activity, a timer, a signal) without reading the events. Pure functions over the
describe answer and the event dicts, unit-tested beside.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

NO_WORKER_AFTER_MS = 10_000  # a task waiting this long for a worker is worth pointing out


class Severity(enum.Enum):
    INFO = "info"
    WARNING = "warning"
    PROBLEM = "problem"


@dataclass(frozen=True)
class Hint:
    severity: Severity
    text: str


def _failure(failure: object) -> str:
    if isinstance(failure, Mapping):
        return f"{failure.get('type') or 'Error'}: {failure.get('message') or ''}"
    return "unknown failure"


def _age(now: int, since: object) -> str:
    if not isinstance(since, int) or since <= 0:
        return ""
    seconds = max(now - since, 0) / 1000
    return f" for {seconds:.0f} s" if seconds < 120 else f" for {seconds / 60:.0f} min"


def hints(run: Mapping[str, Any], events: Sequence[Mapping[str, Any]], now: int) -> list[Hint]:
    """What the run waits for, most pressing first; nothing for a closed run."""
    if run.get("status") != "Running":
        return []
    out: list[Hint] = []
    queue = run.get("task_queue", "")
    for a in run.get("pending_activities") or []:
        name = f"Activity {a.get('activity_type', '')} (#{a.get('activity_id', '')})"
        if a.get("last_failure"):
            out.append(Hint(Severity.PROBLEM, f"{name} keeps failing and is being retried: attempt "
                                              f"{a.get('attempt', '?')}, last failure {_failure(a['last_failure'])}"))
        elif a.get("state") == "Scheduled" and now - int(a.get("scheduled_time") or now) > NO_WORKER_AFTER_MS:
            where = a.get("task_queue") or queue
            out.append(Hint(Severity.WARNING, f"{name} has waited{_age(now, a.get('scheduled_time'))} for a worker"
                                              f" on task queue {where}: is a worker polling it?"))
        else:
            out.append(Hint(Severity.INFO, f"{name} is {str(a.get('state', 'pending')).lower()}"
                                           f"{_age(now, a.get('started_time') or a.get('scheduled_time'))}."))
    for t in run.get("pending_timers") or []:
        out.append(Hint(Severity.INFO, f"Timer {t.get('timer_id', '')} is running."))
    last: Mapping[str, Any] = events[-1] if events else {}
    kind = str(last.get("event_type", ""))
    if kind == "WorkflowTaskScheduled" and now - int(last.get("event_time") or now) > NO_WORKER_AFTER_MS:
        out.append(Hint(Severity.WARNING, f"A workflow task has waited{_age(now, last.get('event_time'))} for a"
                                          f" worker on task queue {queue}: is a worker for it running?"))
    failed = [e for e in events[-6:] if e.get("event_type") == "WorkflowTaskFailed"]
    task = run.get("workflow_task")
    if isinstance(task, Mapping) and int(task.get("attempt") or 1) > 1 and task.get("last_failure"):
        # History keeps a failing task's later attempts out of its events: describe counts them.
        out.append(Hint(Severity.PROBLEM, "The workflow's code fails its tasks (retried until fixed or terminated):"
                                          f" attempt {task['attempt']}, last failure {_failure(task['last_failure'])}"))
    elif failed:
        attrs = failed[-1].get("attributes") or {}
        out.append(Hint(Severity.PROBLEM, "The workflow's code fails its tasks (retried until fixed or terminated):"
                                          f" {_failure(attrs.get('failure'))}"))
    if not out and kind == "WorkflowTaskCompleted":
        out.append(Hint(Severity.INFO, "Nothing is scheduled: the workflow waits for a signal or a condition."))
    return out
