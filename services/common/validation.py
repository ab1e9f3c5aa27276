"""The one validation of every command that enters Kadence, whichever way it comes in.

The frontend runs it on each command it is about to produce (HTTP callers get a 400
naming the field); history runs it on each record of ``kadence.requests`` before the
command's handler (a record that fails goes to ``kadence.dlq`` with the reason, and its
``reply_to`` gets an ``InvalidArgument`` reply). Both sides run the same function, so a
Kafka producer can no longer get in what HTTP refuses.

The limits keep every value within what the store (PostgreSQL ``text`` without NUL,
``bigint`` milliseconds, btree index rows) and the SDK (payloads are JSON, arguments
JSON arrays) accept. Pure functions, no I/O.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from kadence_protocol.reset import ResetPoint

MAX_NAME_CHARS = 1000
# A name is also bounded in UTF-8 bytes: namespace + workflow id must fit a btree index
# row (about 2.7 kB) and a task token.
MAX_NAME_BYTES = 2000
# A workflow id and a request id together, in UTF-8: with the namespace (100) and the name of
# the command the ledger files a request id under, they fit a btree index row (2704 bytes).
MAX_ID_PAIR_BYTES = 2400
MAX_TEXT_CHARS = 10_000  # free text that is not a payload: a termination or cancel reason, a failure type
DEFAULT_MAX_PAYLOAD_BYTES = 2 * 1024 * 1024
# 100 years in milliseconds: far beyond any useful timeout, far from bigint's end once added
# to a time.
MAX_DURATION_MS = 100 * 366 * 24 * 3600 * 1000
MAX_TIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, a time in ms since the epoch
MAX_ID = 2**63 - 1  # event ids and the ids a worker picks (RunAheadWorkflowTask.ahead_id)
MAX_COMMANDS = 10_000  # commands in one workflow task answer
NAMESPACE_PATTERN = r"[A-Za-z0-9._-]{1,100}"
# The start policies' names (kadence.common WorkflowIDReusePolicy, WorkflowIDConflictPolicy).
REUSE_POLICIES = frozenset({"AllowDuplicate", "AllowDuplicateFailedOnly", "RejectDuplicate", "TerminateIfRunning"})
CONFLICT_POLICIES = frozenset({"Fail", "UseExisting", "TerminateExisting"})
_NAMESPACE = re.compile(NAMESPACE_PATTERN)


class Invalid(ValueError):
    """A command field has a value Kadence does not take; ``field`` names it (dotted path)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field} {message}")
        self.field = field
        self.message = f"{field} {message}"


class TooLarge(Invalid):
    """A field over its size limit: a worker's answer may be refitted (services/frontend/oversize.py)
    rather than refused, since the worker sending it again would only be refused again."""


@dataclass(frozen=True)
class Limits:
    """The configurable limits (services/common/config.py ``max_payload_bytes``)."""

    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES


DEFAULT_LIMITS = Limits()


# -- one value ----------------------------------------------------------------------------------


_SURROGATE = re.compile("[\ud800-\udfff]")


def namespace(value: object, field: str = "namespace") -> str:
    if not isinstance(value, str) or not _NAMESPACE.fullmatch(value):
        raise Invalid(field, f"must match {NAMESPACE_PATTERN}")
    return value


def name(value: object, field: str) -> str:
    """A non-empty identifier: 1-1000 characters (2000 bytes in UTF-8), no NUL."""
    if not isinstance(value, str) or not value:
        raise Invalid(field, "must be a non-empty string")
    return _bounded(value, field)


# Dot segments: in a URL path HTTP clients resolve them away (RFC 3986, 5.2.4), so a workflow
# or queue of this id could be started but never described, signaled or polled over HTTP.
DOT_SEGMENTS = frozenset({".", ".."})


def addressable(value: str, field: str) -> str:
    """A name that becomes one segment of an HTTP path (a new workflow's id, a task queue):
    not a dot segment, which no call could name."""
    if value in DOT_SEGMENTS:
        raise Invalid(field, f"cannot be {value!r}: in a URL path it is a dot segment, which HTTP clients"
                             " resolve away, so no call could name it")
    return value


def optional_name(value: object, field: str) -> str | None:
    """An identifier that may be absent or empty (a run id, a request id, an identity)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise Invalid(field, "must be a string")
    return _bounded(value, field) if value else value


def text(value: object, field: str, max_chars: int = MAX_TEXT_CHARS) -> str:
    """Free text, possibly empty: at most ``max_chars`` characters, no NUL."""
    if not isinstance(value, str):
        raise Invalid(field, "must be a string")
    if len(value) > max_chars:
        raise TooLarge(field, f"must be at most {max_chars} characters")
    _unicode(value, field)
    return value


def has_surrogate(value: str) -> bool:
    """Whether ``value`` holds a lone surrogate (JSON's "\\ud800" read as text)."""
    return _SURROGATE.search(value) is not None


def _unicode(value: str, field: str) -> None:
    """No NUL (PostgreSQL's text refuses it) and no lone surrogate (no UTF-8 form: Avro and
    PostgreSQL both refuse it)."""
    if "\x00" in value:
        raise Invalid(field, "must not contain a NUL character")
    if _SURROGATE.search(value):
        raise Invalid(field, "must be valid Unicode (a lone surrogate has no UTF-8 form)")


def _bounded(value: str, field: str) -> str:
    if len(value) > MAX_NAME_CHARS:
        raise Invalid(field, f"must be at most {MAX_NAME_CHARS} characters")
    _unicode(value, field)
    if len(value) * 4 > MAX_NAME_BYTES and len(value.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise Invalid(field, f"must be at most {MAX_NAME_BYTES} bytes in UTF-8")
    return value


def integer(value: object, field: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise Invalid(field, f"must be an integer between {low} and {high}")
    return value


def duration_ms(value: object, field: str) -> int:
    """A timeout or interval in ms: 0 (none) up to 100 years."""
    return integer(value, field, 0, MAX_DURATION_MS)


def time_ms(value: object, field: str) -> int:
    """A time in ms since the epoch (0: unknown), up to the year 9999."""
    return integer(value, field, 0, MAX_TIME_MS)


def payload(value: object, field: str, limits: Limits = DEFAULT_LIMITS, *, array: bool = False) -> str | None:
    """JSON text (or null) of at most ``limits.max_payload_bytes`` bytes; with ``array``, of an array."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise Invalid(field, "must be JSON text (a string) or null")
    cap = limits.max_payload_bytes
    if len(value) > cap or (len(value) * 4 > cap and len(value.encode("utf-8", "surrogatepass")) > cap):
        raise TooLarge(field, f"must be at most {cap} bytes")
    _unicode(value, field)
    decoded = parse_json(value, field)
    if array and not isinstance(decoded, list):
        raise Invalid(field, "must be JSON text of an array (the arguments)")
    return value


def parse_json(value: str, field: str) -> Any:
    """Strict JSON: NaN, Infinity and numbers too large for a double are refused."""
    try:
        return orjson.loads(value)  # fast, and strict; numbers it cannot take get a second look
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(value, parse_constant=_not_json, parse_float=_finite)
    except _NotJson as exc:
        raise Invalid(field, f"is not valid JSON: {exc} (NaN and Infinity are not JSON numbers)") from None
    except (ValueError, RecursionError) as exc:
        raise Invalid(field, f"is not valid JSON: {exc}") from None


class _NotJson(ValueError):
    pass


def _not_json(constant: str) -> Any:
    raise _NotJson(f"{constant} is not a JSON value")


def _finite(number: str) -> float:
    value = float(number)
    if not math.isfinite(value):
        raise _NotJson(f"{number} is out of a double's range")
    return value


def boolean(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise Invalid(field, "must be a boolean")
    return value


def failure(value: object, field: str, limits: Limits = DEFAULT_LIMITS) -> None:
    """A kadence.Failure: message and stack trace bounded like payloads, details JSON."""
    if not isinstance(value, Mapping):
        raise Invalid(field, "must be a Failure object")
    cap = limits.max_payload_bytes
    text(value.get("message"), f"{field}.message", cap)
    text(value.get("type", ""), f"{field}.type", MAX_NAME_CHARS)
    text(value.get("stack_trace", ""), f"{field}.stack_trace", cap)
    boolean(value.get("non_retryable", False), f"{field}.non_retryable")
    payload(value.get("details"), f"{field}.details", limits)


def retry_policy(value: object, field: str) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping):
        raise Invalid(field, "must be a RetryPolicy object or null")
    duration_ms(value.get("initial_interval_ms"), f"{field}.initial_interval_ms")
    duration_ms(value.get("maximum_interval_ms"), f"{field}.maximum_interval_ms")
    coefficient = value.get("backoff_coefficient")
    if (isinstance(coefficient, bool) or not isinstance(coefficient, int | float)
            or not math.isfinite(coefficient) or coefficient < 1):
        raise Invalid(f"{field}.backoff_coefficient", "must be a finite number of at least 1")
    integer(value.get("maximum_attempts"), f"{field}.maximum_attempts", 0, 2**31 - 1)
    types = value.get("non_retryable_error_types")
    if not isinstance(types, list):
        raise Invalid(f"{field}.non_retryable_error_types", "must be an array of strings")
    for i, t in enumerate(types):
        text(t, f"{field}.non_retryable_error_types[{i}]", MAX_NAME_CHARS)


# -- whole commands ---------------------------------------------------------------------------------

Command = Mapping[str, Any]
_Check = Callable[[Command, Limits], None]


def check_command(kind: str, cmd: Command, limits: Limits = DEFAULT_LIMITS) -> None:
    """Raise Invalid, naming the field, if ``cmd`` (a decoded ``kind`` record of
    kadence.requests) is not one Kadence takes. Kinds it does not know pass: the caller
    refuses those."""
    check = _CHECKS.get(kind)
    if check is None:
        return
    try:
        check(cmd, limits)
    except KeyError as exc:
        raise Invalid(str(exc.args[0]), "is required") from None
    workflow_id, request_id = cmd.get("workflow_id"), cmd.get("request_id")
    if isinstance(workflow_id, str) and isinstance(request_id, str) and request_id:
        _ledger_key(workflow_id, request_id)


def _ledger_key(workflow_id: str, request_id: str) -> None:
    """The request-id ledger indexes namespace, workflow id and request id (under the command's
    name) in one btree row of at most 2704 bytes: two names of 2000 bytes each passed every
    check and then failed the commit, answered with PostgreSQL's words."""
    if (len(workflow_id) + len(request_id)) * 4 <= MAX_ID_PAIR_BYTES:
        return
    size = len(workflow_id.encode("utf-8", "surrogatepass")) + len(request_id.encode("utf-8", "surrogatepass"))
    if size > MAX_ID_PAIR_BYTES:
        raise Invalid("request_id", f"and workflow_id together are {size} bytes in UTF-8; at most"
                                    f" {MAX_ID_PAIR_BYTES} are taken (the request-id ledger indexes them together)")


def _workflow(cmd: Command) -> None:
    namespace(cmd["namespace"])
    name(cmd["workflow_id"], "workflow_id")


def _request(cmd: Command) -> None:
    optional_name(cmd["request_id"], "request_id")
    optional_name(cmd["identity"], "identity")
    optional_name(cmd.get("reply_to"), "reply_to")


def _start(cmd: Command, limits: Limits) -> None:
    _workflow(cmd)
    addressable(cmd["workflow_id"], "workflow_id")
    name(cmd["workflow_type"], "workflow_type")
    addressable(name(cmd["task_queue"], "task_queue"), "task_queue")
    payload(cmd["input"], "input", limits, array=True)
    duration_ms(cmd["execution_timeout_ms"], "execution_timeout_ms")
    duration_ms(cmd["workflow_task_timeout_ms"], "workflow_task_timeout_ms")
    duration_ms(cmd.get("run_timeout_ms", 0), "run_timeout_ms")
    _request(cmd)
    start_options(cmd, limits)
    retry_policy(cmd.get("retry_policy"), "retry_policy")  # the workflow retry policy (history/retry.py)
    if cmd.get("cron_schedule") is not None:
        # A cron start creates a schedule (a row of PostgreSQL's schedules), which only the
        # frontend writes today: over Kafka it is dead-lettered, not started as a plain run.
        raise Invalid("cron_schedule", "is taken over HTTP only (POST /workflows); a start record on"
                                       " kadence.requests cannot create a schedule yet")


def start_options(cmd: Command, limits: Limits = DEFAULT_LIMITS) -> None:
    """The start policies (one of their names, or '' for the default) and the memo (JSON
    text of an object, or null) of a start or signal-with-start."""
    choice(cmd.get("id_reuse_policy", ""), "id_reuse_policy", REUSE_POLICIES)
    choice(cmd.get("id_conflict_policy", ""), "id_conflict_policy", CONFLICT_POLICIES)
    _memo(cmd.get("memo"), "memo", limits)


def choice(value: object, field: str, allowed: frozenset[str]) -> str:
    """One of ``allowed`` or '' (the default)."""
    if not isinstance(value, str) or (value and value not in allowed):
        raise Invalid(field, f"must be one of {', '.join(sorted(allowed))} (or empty for the default)")
    return value


def _signal_with_start(cmd: Command, limits: Limits) -> None:
    _start(cmd, limits)
    name(cmd["signal_name"], "signal_name")
    payload(cmd["signal_input"], "signal_input", limits, array=True)


def _signal(cmd: Command, limits: Limits) -> None:
    _workflow(cmd)
    optional_name(cmd["run_id"], "run_id")
    name(cmd["signal_name"], "signal_name")
    payload(cmd["input"], "input", limits, array=True)
    _request(cmd)


def _terminate(cmd: Command, limits: Limits) -> None:
    _workflow(cmd)
    optional_name(cmd["run_id"], "run_id")
    text(cmd["reason"], "reason")
    _request(cmd)


def _request_cancel(cmd: Command, limits: Limits) -> None:
    _workflow(cmd)
    optional_name(cmd["run_id"], "run_id")
    text(cmd["reason"], "reason")
    _request(cmd)


def _reset(cmd: Command, limits: Limits) -> None:
    _workflow(cmd)
    optional_name(cmd["run_id"], "run_id")
    points = [p.value for p in ResetPoint]
    if cmd["reset_point"] not in points:
        raise Invalid("reset_point", "must be 'first', 'last' or '' (the task named by event_id)")
    if cmd["reset_point"] == ResetPoint.EVENT_ID:
        integer(cmd["event_id"], "event_id", 1, MAX_ID)
    elif cmd["event_id"] != 0:
        raise Invalid("event_id", f"must be 0 (or left out) with reset_point {cmd['reset_point']!r}")
    if not isinstance(cmd["reapply_signals"], bool):
        raise Invalid("reapply_signals", "must be true or false")
    text(cmd["reason"], "reason")
    _request(cmd)


UPDATE_STAGES = ("accepted", "completed")


def _update(cmd: Command, limits: Limits) -> None:
    _workflow(cmd)
    optional_name(cmd["run_id"], "run_id")
    name(cmd["update_id"], "update_id")
    name(cmd["update_name"], "update_name")
    payload(cmd["input"], "input", limits, array=True)
    if cmd["wait_for_stage"] not in UPDATE_STAGES:
        raise Invalid("wait_for_stage", f"must be one of {', '.join(UPDATE_STAGES)}")
    _request(cmd)


def _task(cmd: Command) -> None:
    """The task reference every worker answer carries (from its task token)."""
    _workflow(cmd)
    name(cmd["run_id"], "run_id")
    integer(cmd["scheduled_event_id"], "scheduled_event_id", 0, MAX_ID)
    integer(cmd["attempt"], "attempt", 0, 2**31 - 1)
    optional_name(cmd["identity"], "identity")


def _task_started(cmd: Command, limits: Limits) -> None:
    _task(cmd)
    time_ms(cmd.get("started_time", 0), "started_time")


def _workflow_task_completed(cmd: Command, limits: Limits) -> None:
    _task(cmd)
    time_ms(cmd.get("started_time", 0), "started_time")
    commands(cmd["commands"], "commands", limits)


def _workflow_task_failed(cmd: Command, limits: Limits) -> None:
    _task(cmd)
    text(cmd["cause"], "cause", MAX_NAME_CHARS)
    if cmd.get("failure") is not None:
        failure(cmd["failure"], "failure", limits)


def _activity_completed(cmd: Command, limits: Limits) -> None:
    _task(cmd)
    payload(cmd["result"], "result", limits)
    ahead = cmd.get("workflow_task")
    if ahead is not None:
        _run_ahead_task(ahead, limits)


def _run_ahead_task(ahead: Command, limits: Limits) -> None:
    """A RunAheadWorkflowTask (of an activity's answer, or of a timer run ahead)."""
    for field in ("after_scheduled_event_id", "ahead_id", "after_ahead_id"):
        integer(ahead.get(field, 0), f"workflow_task.{field}", 0, MAX_ID)
    for field in ("after_started_time", "started_time"):
        time_ms(ahead[field], f"workflow_task.{field}")
    commands(ahead.get("commands", []), "workflow_task.commands", limits)


def _timer_ran_ahead(cmd: Command, limits: Limits) -> None:
    _task(cmd)
    name(cmd["timer_id"], "timer_id")
    _run_ahead_task(cmd["workflow_task"], limits)


def _activity_failed(cmd: Command, limits: Limits) -> None:
    _task(cmd)
    failure(cmd["failure"], "failure", limits)


def _heartbeat(cmd: Command, limits: Limits) -> None:
    _task(cmd)
    payload(cmd["details"], "details", limits)


def _activity_canceled(cmd: Command, limits: Limits) -> None:
    _task(cmd)
    payload(cmd["details"], "details", limits)


_CHECKS: dict[str, _Check] = {
    "StartWorkflowExecution": _start,
    "SignalWithStartWorkflowExecution": _signal_with_start,
    "SignalWorkflowExecution": _signal,
    "TerminateWorkflowExecution": _terminate,
    "RequestCancelWorkflowExecution": _request_cancel,
    "RecordWorkflowTaskStarted": _task_started,
    "RespondWorkflowTaskCompleted": _workflow_task_completed,
    "RespondWorkflowTaskFailed": _workflow_task_failed,
    "RecordActivityTaskStarted": _task_started,
    "RespondActivityTaskCompleted": _activity_completed,
    "RespondActivityTaskFailed": _activity_failed,
    "RecordActivityTaskHeartbeat": _heartbeat,
    "RespondActivityTaskCanceled": _activity_canceled,
    "RespondTimerRunAhead": _timer_ran_ahead,
    "UpdateWorkflowExecution": _update,
    "ResetWorkflowExecution": _reset,
}


# -- a workflow task's commands -----------------------------------------------------------------------


def commands(value: object, field: str, limits: Limits = DEFAULT_LIMITS) -> None:
    """The commands of a completed workflow task (kadence.Command records)."""
    if not isinstance(value, list):
        raise Invalid(field, "must be an array of commands")
    if len(value) > MAX_COMMANDS:
        raise Invalid(field, f"must hold at most {MAX_COMMANDS} commands")
    for i, c in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(c, Mapping):
            raise Invalid(where, "must be a command object")
        kind = c.get("command_type")
        check = _COMMAND_CHECKS.get(kind) if isinstance(kind, str) else None
        if check is None:
            raise Invalid(f"{where}.command_type", f"must be one of {', '.join(_COMMAND_CHECKS)}")
        attrs = c.get("attributes")
        if not isinstance(attrs, Mapping):
            raise Invalid(f"{where}.attributes", "must be an object")
        try:
            check(attrs, f"{where}.attributes", limits)
        except KeyError as exc:
            raise Invalid(f"{where}.attributes.{exc.args[0]}", "is required") from None


def _schedule_activity(a: Command, at: str, limits: Limits) -> None:
    name(a["activity_id"], f"{at}.activity_id")
    name(a["activity_type"], f"{at}.activity_type")
    addressable(optional_name(a["task_queue"], f"{at}.task_queue") or "", f"{at}.task_queue")
    payload(a["input"], f"{at}.input", limits, array=True)
    for field in ("schedule_to_close_timeout_ms", "schedule_to_start_timeout_ms", "start_to_close_timeout_ms",
                  "heartbeat_timeout_ms"):
        duration_ms(a[field], f"{at}.{field}")
    retry_policy(a.get("retry_policy"), f"{at}.retry_policy")


def _start_timer(a: Command, at: str, limits: Limits) -> None:
    name(a["timer_id"], f"{at}.timer_id")
    duration_ms(a["start_to_fire_timeout_ms"], f"{at}.start_to_fire_timeout_ms")
    if a.get("requested_time") is not None:  # Command v8; history clamps it (timer_start.py)
        time_ms(a["requested_time"], f"{at}.requested_time")


def _cancel_timer(a: Command, at: str, limits: Limits) -> None:
    name(a["timer_id"], f"{at}.timer_id")


def _complete(a: Command, at: str, limits: Limits) -> None:
    payload(a.get("result"), f"{at}.result", limits)


def _fail(a: Command, at: str, limits: Limits) -> None:
    failure(a["failure"], f"{at}.failure", limits)


def _continue_as_new(a: Command, at: str, limits: Limits) -> None:
    optional_name(a["workflow_type"], f"{at}.workflow_type")  # empty: the same type
    addressable(optional_name(a["task_queue"], f"{at}.task_queue") or "", f"{at}.task_queue")  # empty: the same
    payload(a["input"], f"{at}.input", limits, array=True)
    _memo(a.get("memo"), f"{at}.memo", limits)
    _memo(a.get("search_attributes"), f"{at}.search_attributes", limits)  # a JSON object too (Command v6)


# A memo (and search attributes) is parsed and written again as JSON by the services (describe,
# the visibility row, every list answer), where orjson stops at 255 levels with the answer's own.
MAX_MEMO_DEPTH = 100


def _memo(value: object, field: str, limits: Limits) -> None:
    memo = payload(value, field, limits)
    if memo is None:
        return
    parsed = parse_json(memo, field)
    if not isinstance(parsed, dict):
        raise Invalid(field, "must be JSON text of an object")
    if _depth_over(parsed, MAX_MEMO_DEPTH):
        raise Invalid(field, f"must be nested at most {MAX_MEMO_DEPTH} levels deep")


def _depth_over(value: object, limit: int) -> bool:
    """Whether arrays and objects in ``value`` nest more than ``limit`` levels (without
    recursion: the value may be nested deeper than the stack)."""
    level: list[object] = [value]
    for _ in range(limit):
        level = [c for v in level if isinstance(v, dict | list)
                 for c in (v.values() if isinstance(v, dict) else v) if isinstance(c, dict | list)]
        if not level:
            return False
    return True


def _marker(a: Command, at: str, limits: Limits) -> None:
    name(a["marker_name"], f"{at}.marker_name")
    payload(a.get("details"), f"{at}.details", limits)


def _request_cancel_activity(a: Command, at: str, limits: Limits) -> None:
    # An event id of the run: 0 names no activity (the SDK never sends it).
    integer(a["scheduled_event_id"], f"{at}.scheduled_event_id", 1, MAX_ID)


def _cancel_workflow(a: Command, at: str, limits: Limits) -> None:
    payload(a.get("details"), f"{at}.details", limits)


def _accept_update(a: Command, at: str, limits: Limits) -> None:
    name(a["update_id"], f"{at}.update_id")


def _reject_update(a: Command, at: str, limits: Limits) -> None:
    name(a["update_id"], f"{at}.update_id")
    failure(a["failure"], f"{at}.failure", limits)


def _complete_update(a: Command, at: str, limits: Limits) -> None:
    name(a["update_id"], f"{at}.update_id")
    payload(a.get("result"), f"{at}.result", limits)
    if a.get("failure") is not None:
        failure(a["failure"], f"{at}.failure", limits)


_COMMAND_CHECKS: dict[str, Callable[[Command, str, Limits], None]] = {
    "ScheduleActivityTask": _schedule_activity,
    "StartTimer": _start_timer,
    "CancelTimer": _cancel_timer,
    "CompleteWorkflowExecution": _complete,
    "FailWorkflowExecution": _fail,
    "ContinueAsNewWorkflowExecution": _continue_as_new,
    "RecordMarker": _marker,
    "RequestCancelActivityTask": _request_cancel_activity,
    "CancelWorkflowExecution": _cancel_workflow,
    "AcceptWorkflowUpdate": _accept_update,
    "RejectWorkflowUpdate": _reject_update,
    "CompleteWorkflowUpdate": _complete_update,
}


# -- child workflows ----------------------------------------------------------------------------
# The two workflow task commands, and the records history's outbox sends between shards
# (services/history/children.py): history takes those from kadence.requests like any other
# record, so they get the same check (a bad one goes to the dead letter topic, never stops
# the partition). Registered apart from the tables above to keep this concern in one place.

PARENT_CLOSE_POLICIES = ("Terminate", "RequestCancel", "Abandon")  # kadence.ParentClosePolicy
NOTICE_KINDS = ("Started", "StartFailed", "Completed", "Failed", "TimedOut", "Terminated", "Canceled",
                "Signaled", "SignalFailed")  # kadence.ChildWorkflowNoticeKind


def symbol(value: object, field: str, symbols: tuple[str, ...]) -> str:
    """One symbol of an Avro enum (a JSON caller may send any string)."""
    if not isinstance(value, str) or value not in symbols:
        raise Invalid(field, f"must be one of {', '.join(symbols)}")
    return value


def _event_id(value: object, field: str) -> int:
    return integer(value, field, 1, MAX_ID)


def _start_child(a: Command, at: str, limits: Limits) -> None:
    addressable(name(a["workflow_id"], f"{at}.workflow_id"), f"{at}.workflow_id")
    name(a["workflow_type"], f"{at}.workflow_type")
    addressable(optional_name(a["task_queue"], f"{at}.task_queue") or "", f"{at}.task_queue")  # empty: the parent's
    payload(a["input"], f"{at}.input", limits, array=True)
    for field in ("execution_timeout_ms", "run_timeout_ms", "workflow_task_timeout_ms"):
        duration_ms(a[field], f"{at}.{field}")
    symbol(a.get("parent_close_policy", "Terminate"), f"{at}.parent_close_policy", PARENT_CLOSE_POLICIES)
    retry_policy(a.get("retry_policy"), f"{at}.retry_policy")


def _signal_external(a: Command, at: str, limits: Limits) -> None:
    name(a["workflow_id"], f"{at}.workflow_id")
    optional_name(a.get("run_id"), f"{at}.run_id")  # absent: the current run (an external handle)
    name(a["signal_name"], f"{at}.signal_name")
    payload(a["input"], f"{at}.input", limits, array=True)
    boolean(a.get("child_workflow_only", True), f"{at}.child_workflow_only")


def _parent(cmd: Command, prefix: str) -> None:
    """The run and event a record between shards names as its sender (parent_* or sender_*)."""
    _same_namespace(cmd, f"{prefix}_namespace")
    name(cmd[f"{prefix}_workflow_id"], f"{prefix}_workflow_id")
    name(cmd[f"{prefix}_run_id"], f"{prefix}_run_id")
    _event_id(cmd[f"{prefix}_initiated_event_id"], f"{prefix}_initiated_event_id")


def _same_namespace(cmd: Command, field: str) -> None:
    """A child lives in its parent's namespace, so a record between them names one namespace:
    one naming another would carry what a producer may do in its own namespace (signed
    ingress checks only the record's) into a run of the other, through history's own notices."""
    namespace(cmd[field], field)
    if cmd[field] != cmd["namespace"]:
        raise Invalid(field, f"must be the record's namespace {cmd['namespace']!r}: a child workflow and its"
                             " parent share one namespace")


def _child_start_request(cmd: Command, limits: Limits) -> None:
    _workflow(cmd)
    name(cmd["new_run_id"], "new_run_id")
    name(cmd["workflow_type"], "workflow_type")
    name(cmd["task_queue"], "task_queue")
    payload(cmd["input"], "input", limits, array=True)
    for field in ("execution_timeout_ms", "run_timeout_ms", "workflow_task_timeout_ms"):
        duration_ms(cmd[field], field)
    name(cmd["request_id"], "request_id")
    _parent(cmd, "parent")
    retry_policy(cmd.get("retry_policy"), "retry_policy")


def _signal_external_request(cmd: Command, limits: Limits) -> None:
    _workflow(cmd)
    optional_name(cmd["run_id"], "run_id")
    name(cmd["signal_name"], "signal_name")
    payload(cmd["input"], "input", limits, array=True)
    name(cmd["request_id"], "request_id")
    _parent(cmd, "sender")


def _child_notice(cmd: Command, limits: Limits) -> None:
    _workflow(cmd)
    name(cmd["run_id"], "run_id")
    _event_id(cmd["initiated_event_id"], "initiated_event_id")
    symbol(cmd["kind"], "kind", NOTICE_KINDS)
    _same_namespace(cmd, "child_namespace")
    name(cmd["child_workflow_id"], "child_workflow_id")
    optional_name(cmd["child_run_id"], "child_run_id")
    optional_name(cmd["workflow_type"], "workflow_type")
    payload(cmd["result"], "result", limits)
    if cmd["failure"] is not None:
        failure(cmd["failure"], "failure", limits)
    text(cmd["reason"], "reason")
    payload(cmd["details"], "details", limits)
    text(cmd["cause"], "cause", MAX_NAME_CHARS)


def _parent_close_policy(cmd: Command, limits: Limits) -> None:
    _workflow(cmd)
    _parent(cmd, "parent")
    symbol(cmd["policy"], "policy", PARENT_CLOSE_POLICIES)
    text(cmd["reason"], "reason")
    name(cmd["request_id"], "request_id")


_COMMAND_CHECKS.update({
    "StartChildWorkflowExecution": _start_child,
    "SignalExternalWorkflowExecution": _signal_external,
})
_CHECKS.update({
    "StartChildWorkflowExecution": _child_start_request,
    "SignalExternalWorkflowExecution": _signal_external_request,
    "ChildWorkflowNotice": _child_notice,
    "ApplyParentClosePolicy": _parent_close_policy,
})
