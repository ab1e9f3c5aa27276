"""The run summary history writes for the frontend (``executions.summary``), beside the snapshot.

The snapshot (``executions.state``) is history's private layout (snapshot.py), free to
change; the frontend answers describe, result waits, heartbeats, queries and the update
requests of a workflow task from the row's columns and this summary only. The summary is
canonical JSON (sorted keys, compact) of an object with:

* ``status``, ``result``, ``failure``, ``new_run_id``, ``cancel_details``,
  ``terminate_reason``: the run's outcome (services/common/outcome.py reads them;
  ``terminate_reason`` is absent from rows last written by a build before it, read as null);
* ``memo`` (JSON text or null), ``history_size_bytes``;
* ``search_attributes``: the run's search attributes as it stands (the start's with the
  workflow's upserts merged in), JSON text of an object or null (absent from rows last
  written by a build before it);
* ``reset_from_run_id``: the run this one was reset from (reset.py), or null;
* ``attempt``: the run's attempt under the workflow retry policy (1: the first run);
* ``first_task_completed``: whether a workflow task of the run has completed (a query waits
  for it);
* ``activities``, ``timers``, ``children``: the pending ones, by scheduled event id, timer id
  and initiated event id, each an object with the fields of its info in state.py;
* ``update_requests``: the update requests waiting for the workflow, in delivery order, each
  ``{"update_id", "name", "input"}``.
* ``workflow_task``: the running run's workflow task while it is outstanding or failing, or
  null: ``{"attempt", "state" (Scheduled, Started, or Backoff between failed attempts),
  "scheduled_time", "failures" (in a row), "last_failure"}`` (transient.py).

Fields are only ever added; migration 0012 wrote the summary of every row that existed before.
"""

from __future__ import annotations

from typing import Any

import orjson

from kadence_protocol.enums import UpdateStage

from .state import MutableState

# With no update request waiting (most runs) the summary holds exactly this: the frontend
# skips such a row's summary in SQL (services/frontend/reads.py).
NO_UPDATE_REQUESTS = b'"update_requests":[]'


# An update request's ``seq`` (its delivery order) also says which events the run had when it
# arrived: the last event id, shifted by this, plus a counter. A workflow task hands the worker
# the events up to its WorkflowTaskScheduled; a request that came after a later event (a
# signal sent before the update) goes with the next task, which has that event, so the
# handler sees what was sent before it. Older seqs (a plain counter) read as event 0.
SEQ_EVENT_SHIFT = 20


def arrival_seq(s: MutableState) -> int:
    """The ``seq`` of an update request arriving now: after every earlier one, and naming
    the run's last event."""
    latest = max((r.seq for r in s.update_requests.values()), default=0)
    return max(latest + 1, (s.next_event_id - 1) << SEQ_EVENT_SHIFT)


def arrived_after(seq: int) -> int:
    """The last event id of the run when the update request of ``seq`` arrived."""
    return seq >> SEQ_EVENT_SHIFT


def waiting_updates(s: MutableState) -> list[dict[str, Any]]:
    """The update requests waiting for the workflow, in delivery order, as a workflow task
    hands them to the worker (the summary's ``update_requests``), each with the last event
    id of the run when it arrived (``after_event_id``: the frontend hands it only with a task
    that brings that event)."""
    if not s.update_requests:
        return []  # most runs: asked of every commit and workflow task hand-over
    waiting = sorted((r.seq, uid, r) for uid, r in s.update_requests.items() if r.stage == UpdateStage.REQUESTED)
    return [{"update_id": uid, "name": r.name, "input": r.input, "after_event_id": arrived_after(seq)}
            for seq, uid, r in waiting]


def summary(s: MutableState) -> bytes:
    """The summary of ``s`` as written beside its snapshot in the same commit."""
    return orjson.dumps({
        "status": s.status, "result": s.result, "failure": s.failure, "new_run_id": s.new_run_id,
        "cancel_details": s.cancel_details, "terminate_reason": s.terminate_reason, "memo": s.memo,
        "history_size_bytes": s.history_size_bytes,
        "reset_from_run_id": s.reset_from_run_id, "search_attributes": s.search_attributes,
        "attempt": s.attempt,
        "first_task_completed": s.last_completed_wt_scheduled_id != 0,
        "activities": s.activities, "timers": s.timers, "children": s.children,
        "update_requests": waiting_updates(s),
        "workflow_task": _workflow_task(s),
    }, option=orjson.OPT_SORT_KEYS)


def _workflow_task(s: MutableState) -> dict[str, Any] | None:
    """The run's workflow task as describe shows it: its attempt and the last failure of a
    failing streak, counting the attempts history keeps out of its events."""
    failures = s.wt_streak
    wt = s.wt
    if not s.running or (wt is None and failures == 0):
        return None
    state = "Backoff" if wt is None else "Started" if wt.started_event_id else "Scheduled"
    return {"attempt": wt.attempt if wt is not None else failures + 1, "state": state,
            "scheduled_time": wt.scheduled_time if wt is not None else None, "failures": failures,
            "last_failure": s.wt_transient_failure if s.wt_transient_failures else s.wt_last_failure}
