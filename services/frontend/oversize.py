"""A worker's answer over the payload limit, made into one history takes.

With ``KADENCE_MAX_PAYLOAD_BYTES`` below the request limit the SDK knows of, a worker's
answer can pass the HTTP size check and still hold a payload history would dead-letter.
Refused with a 400, the answer was dropped and its task timed out and ran again, to be
refused again: an activity retried for ever, a workflow that never moved. As Temporal's
server does, the answer is refitted instead (``refit``), and what was cut is said in the
failure history records:

- an activity's result over the limit fails the attempt, ``PayloadTooLarge``, non-retryable;
  a task run ahead that is over it is left out (history hands that task out as usual);
- a failure's message or stack trace over it is cut short; its details, an attempt's last
  heartbeat details or a cancellation's details over it are left out;
- a workflow task whose commands hold a payload over it fails, cause ``PayloadTooLarge``
  (the workflow's code gives the same commands again: the task's failures show in
  describe and history, as any failing workflow task's do).
"""

from __future__ import annotations

from typing import Any

from kadence_protocol.enums import WorkflowTaskFailedCause
from services.common import validation as common

__all__ = ["refit"]

_CUT = " [cut: over KADENCE_MAX_PAYLOAD_BYTES]"


def refit(name: str, fields: dict[str, Any], error: common.TooLarge, limits: common.Limits
          ) -> tuple[str, dict[str, Any]] | None:
    """The answer ``name`` with ``fields`` made to fit where ``error`` says it does not, or
    None when the field is not one an answer may do without (the 400 stands)."""
    cap = limits.max_payload_bytes
    field = error.field
    if name == "RespondActivityTaskCompleted":
        if field.startswith("workflow_task."):
            return name, {**fields, "workflow_task": None}
        if field == "result":
            return "RespondActivityTaskFailed", {
                "failure": _too_large(f"the activity's result is over the limit of {cap} bytes", cap),
                "last_heartbeat_details": None}
    elif name == "RespondWorkflowTaskCompleted" and field.startswith("commands"):
        return "RespondWorkflowTaskFailed", {
            "cause": WorkflowTaskFailedCause.PAYLOAD_TOO_LARGE.value,
            "failure": _too_large(f"the workflow task's {error.message}", cap)}
    elif name in ("RespondActivityTaskFailed", "RespondWorkflowTaskFailed") and field.startswith("failure."):
        key = field.removeprefix("failure.")
        failure = dict(fields["failure"])
        if key == "details":
            failure["details"] = None
        elif key in ("message", "stack_trace"):
            failure[key] = _cut(str(failure[key]), cap)
        else:
            return None
        return name, {**fields, "failure": failure}
    elif name in ("RespondActivityTaskFailed", "RespondActivityTaskCanceled") and field in (
            "last_heartbeat_details", "details"):
        return name, {**fields, field: None}
    return None


def _too_large(message: str, cap: int) -> dict[str, Any]:
    return {"message": _cut(message, cap), "type": "PayloadTooLarge", "stack_trace": "", "non_retryable": True,
            "details": None}


def _cut(text: str, cap: int) -> str:
    """``text`` within ``cap`` bytes of UTF-8 (so within ``cap`` characters too), marked cut
    when it was."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= cap:
        return text
    mark = _CUT if len(_CUT) < cap else ""
    return data[:cap - len(mark)].decode("utf-8", "ignore") + mark
