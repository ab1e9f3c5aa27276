"""Whether an async completion's attempt already ended with the very answer asked again.

An async completion (``AsyncActivityHandle.complete``/``fail``/``report_cancellation``) asks
the frontend to check that its attempt still runs. When the first try was taken and only its
answer was lost, the client's retry finds the attempt over: refusing it (404
``ActivityNotFound``) would report as failed a call that took effect. So a refused check
looks at how the attempt ended, and the retry is answered ok when it ended with this answer:

* complete: the activity's closing event is ``ActivityTaskCompleted`` of this attempt, with
  this result and this identity;
* fail: the closing ``ActivityTaskFailed`` of this attempt with this failure and identity,
  or (the policy retries it, which writes no event) the pending activity is at the next
  attempt and its last failure is this one;
* report cancellation: the closing ``ActivityTaskCanceled`` of this attempt with these
  details and identity, or the failure an unasked cancellation is recorded as.

The answer itself is what is compared: the record carries no request id, and history keeps
none for activity answers. Any other late answer (another result, a failure where a result
was recorded, another client's) is still refused. Pure: the engine does the reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["CLOSING", "UNASKED_CANCEL", "closed_alike", "retried_alike", "same_failure"]

#: The event that closes an activity, by the answer that would have written it.
CLOSING = {"RespondActivityTaskCompleted": "ActivityTaskCompleted",
           "RespondActivityTaskFailed": "ActivityTaskFailed",
           "RespondActivityTaskCanceled": "ActivityTaskCanceled"}
#: The failure type of a cancellation reported unasked (history's cancellation.UNASKED).
UNASKED_CANCEL = "ActivityCanceledUnasked"
_FAILURE_KEYS = ("message", "type", "stack_trace", "non_retryable", "details")


def same_failure(recorded: Mapping[str, Any] | None, asked: Mapping[str, Any] | None) -> bool:
    """The two failures say the same (absent fields read as their defaults)."""
    if recorded is None or asked is None:
        return recorded is asked
    defaults: dict[str, Any] = {"type": "", "stack_trace": "", "non_retryable": False, "details": None}
    return all(recorded.get(k, defaults.get(k)) == asked.get(k, defaults.get(k)) for k in _FAILURE_KEYS)


def _unasked_failure(fields: Mapping[str, Any]) -> dict[str, Any]:
    """What an unasked cancellation with these fields is recorded as (its message aside)."""
    return {"type": UNASKED_CANCEL, "details": fields.get("details")}


def closed_alike(name: str, identity: str, fields: Mapping[str, Any], closing: Mapping[str, Any],
                 started_attempt: int, attempt: int) -> bool:
    """Whether ``closing`` (the activity's closing event; its started event records
    ``started_attempt``) is what answer ``name`` of ``attempt`` with ``fields`` wrote."""
    if started_attempt != attempt:
        return False
    a = closing.get("attributes") or {}
    if a.get("identity", "") != identity:
        return False
    kind = closing.get("event_type")
    if name == "RespondActivityTaskCanceled" and kind == "ActivityTaskFailed":
        failure = a.get("failure") or {}
        want = _unasked_failure(fields)
        return bool(failure.get("type") == want["type"] and failure.get("details") == want["details"])
    if kind != CLOSING.get(name):
        return False
    if kind == "ActivityTaskCompleted":
        return bool(a.get("result") == fields.get("result"))
    if kind == "ActivityTaskFailed":
        return same_failure(a.get("failure"), fields.get("failure"))
    return bool(a.get("details") == fields.get("details"))


def retried_alike(name: str, fields: Mapping[str, Any], pending: Mapping[str, Any] | None, attempt: int) -> bool:
    """Whether ``pending`` (the activity as the run's summary has it, None when not pending)
    went on to the next attempt on this failure of ``attempt`` (a retried attempt writes no
    event; its failure is the pending activity's last)."""
    if pending is None or pending.get("attempt") != attempt + 1:
        return False
    last = pending.get("last_failure")
    if name == "RespondActivityTaskFailed":
        return same_failure(last, fields.get("failure"))
    if name == "RespondActivityTaskCanceled" and last is not None:
        want = _unasked_failure(fields)
        return bool(last.get("type") == want["type"] and last.get("details") == want["details"])
    return False
