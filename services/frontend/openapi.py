"""The OpenAPI 3.1 document of the public API, and the one definition of each request body.

Each operation's body schema in ``_OPS`` is both what the document shows and what the
server enforces: app.py checks every body against ``request_schema(operationId)``
(schema_check.py) before the handler runs. Bodies are strict (an unknown field is refused);
an optional field may be null, which the handlers read as absent.
"""

from __future__ import annotations

from typing import Any

from kadence_protocol.enums import TaskKind
from services.common import validation as common
from services.common.visibility.sql import MAX_PAGE_SIZE, AttributeType

from .admin import ADMIN_ROUTES
from .handlers import ANSWER_OPERATIONS, PREFIX, ROUTES
from .task_queues import TASK_QUEUE_ROUTES
from .validation import command_types
from .visibility import MAX_QUERY_CHARS

Schema = dict[str, Any]


def _obj(props: dict[str, Schema], required: list[str] | None = None, **extra: Any) -> Schema:
    out: Schema = {"type": "object", "properties": props, "additionalProperties": True, **extra}
    if required:
        out["required"] = required
    return out


def _nullable(schema: Schema) -> Schema:
    """``schema`` that also takes null (an optional field: null reads as absent)."""
    if "$ref" in schema:
        schema = COMPONENTS[schema["$ref"].rsplit("/", 1)[-1]]
    kinds = schema.get("type")
    if kinds is None:
        return schema
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    out = {**schema, "type": kinds if "null" in kinds else [*kinds, "null"]}
    if "enum" in out and None not in out["enum"]:
        out["enum"] = [*out["enum"], None]
    return out


def _body(props: dict[str, Schema], required: list[str] | None = None, *, not_null: tuple[str, ...] = (),
          **extra: Any) -> Schema:
    """A request body: strict (unknown fields refused), optional fields nullable unless in ``not_null``."""
    need = required or []
    out = _obj({k: s if k in need or k in not_null else _nullable(s) for k, s in props.items()}, need, **extra)
    out["additionalProperties"] = False
    return out


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


STR: Schema = {"type": "string"}
NAME: Schema = {"type": "string", "minLength": 1, "maxLength": 1000}
INT: Schema = {"type": "integer"}
MS: Schema = {"type": "integer", "minimum": 0, "description": "milliseconds"}
ARRAY: Schema = {"type": "array", "items": {}}
JSON_TEXT: Schema = {"type": ["string", "null"], "contentMediaType": "application/json",
                     "description": "JSON text (a string holding one JSON value)"}
NULL_STR: Schema = {"type": ["string", "null"]}
EMPTY: Schema = _obj({})
NAMESPACE: Schema = {"type": "string", "pattern": f"^{common.NAMESPACE_PATTERN}$"}

# Field schemas carry the limits of services.common.validation, so the document says what is refused.
ID: Schema = {"type": "string", "maxLength": common.MAX_NAME_CHARS,
              "description": "run id, request id or identity: empty or absent for none"}
TEXT: Schema = {"type": "string", "maxLength": common.MAX_TEXT_CHARS}
DURATION_MS: Schema = {"type": "integer", "minimum": 0, "maximum": common.MAX_DURATION_MS,
                       "description": "milliseconds"}
WAIT_S: Schema = {"type": "number", "minimum": 0, "maximum": 600, "description": "seconds"}
ID_INT: Schema = {"type": "integer", "minimum": 0, "maximum": common.MAX_ID}

# One result wait of POST /workflow-results: what GET /workflows/{workflow_id}/result takes.
RESULT_WAIT: Schema = _body({"workflow_id": NAME, "run_id": ID, "wait_seconds": {**WAIT_S, "default": 30}},
                            ["workflow_id"])

_START_FIELDS: dict[str, Schema] = {
    "workflow_id": NAME, "workflow_type": NAME, "task_queue": NAME, "input": ARRAY,
    "execution_timeout_ms": DURATION_MS, "workflow_task_timeout_ms": {**DURATION_MS, "default": 10_000},
    "request_id": ID, "identity": ID, "run_timeout_ms": DURATION_MS,
    "id_reuse_policy": {"type": "string", "enum": ["", "AllowDuplicate", "AllowDuplicateFailedOnly", "RejectDuplicate",
                                                   "TerminateIfRunning"],
                        "description": "When a closed run of the id exists (default AllowDuplicate)"},
    "memo": {"type": ["object", "null"], "description": "Non-indexed information about the run (describe returns it)"},
}
# Start only: signal-with-start does not carry search attributes (its Avro record has none).
_SEARCH_ATTRIBUTES: Schema = {"type": "object", "description": "Custom search attributes (name: value) of the run's "
                                                               "visibility row, each registered in the namespace"}
# Start only: how a failed or timed-out run is retried as a new run (README, Workflow retry policy).
_WORKFLOW_RETRY: Schema = {
    "type": ["object", "null"], "additionalProperties": False,
    "description": "Retry a failed or timed-out run as a new run of the workflow id (null: never)",
    "properties": {"initial_interval_ms": {**DURATION_MS, "default": 1000},
                   "backoff_coefficient": {"type": "number", "minimum": 1, "default": 2.0},
                   "maximum_interval_ms": {**DURATION_MS, "description": "0: 100 x initial_interval_ms"},
                   "maximum_attempts": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1,
                                        "description": "0: unlimited"},
                   "non_retryable_error_types": {"type": "array", "items": NAME}}}
_CONFLICT: Schema = {"type": "string", "enum": ["", "Fail", "UseExisting", "TerminateExisting"],
                     "description": "When a run of the id is running (default Fail: 409)"}
# An async completion's handle asks to be refused (404 ActivityNotFound) when the attempt is over.
_CURRENT_ATTEMPT = {"type": "boolean", "default": False,
                    "description": "404 ActivityNotFound unless the token's attempt is still running (a stale token)"}
_POLL = _body({"identity": ID, "max_tasks": {"type": "integer", "minimum": 1, "maximum": 100, "default": 1},
               "wait_seconds": {**WAIT_S, "default": 60}})

COMPONENTS: dict[str, Schema] = {
    "RunAheadWorkflowTask": _obj(
        {"after_scheduled_event_id": ID_INT, "after_started_time": ID_INT, "started_time": ID_INT,
         "commands": {"type": "array", "items": _ref("Command")}, "ahead_id": {**ID_INT, "minimum": 1},
         "after_ahead_id": ID_INT, "runs_timers_ahead": {"type": "boolean", "default": False}},
        ["after_started_time", "started_time", "ahead_id"],
        description="The workflow's next task, run by the worker that completed the activity with its result, "
                    "or on a user timer's firing (docs/protocol.md, run-ahead). History records it only if it is "
                    "the task it would have handed out; otherwise the commands are dropped and the task is "
                    "scheduled as usual. runs_timers_ahead: the worker runs the timers this task starts ahead "
                    "(history holds their own firing for its grace)."),
    "Error": _obj({"error": STR, "message": STR, "field": NULL_STR,
                   # ResourceExhausted (429): which limit of which namespace, and when to try again; a 503
                   # for a read whose share of the pool was full: which share (limit) and its size.
                   "namespace": STR, "limit": STR, "limit_value": {"type": "number"}, "retry_after_ms": INT},
                  ["error", "message"]),
    "Failure": _obj({"message": STR, "type": STR, "stack_trace": STR, "non_retryable": {"type": "boolean"},
                     "details": JSON_TEXT}, ["message"]),
    "HistoryEvent": _obj({"event_id": INT, "event_time": INT, "event_type": STR,
                          "attributes": {"type": ["object", "null"]}}, ["event_id", "event_time", "event_type"]),
    # The command types are those of the Avro schema (kadence.Command), so a new one is documented and taken.
    "Command": _obj({"command_type": {"type": "string", "enum": command_types()},
                     "attributes": {"type": "object", "description": "the Avro attributes record of the type"}},
                    ["command_type", "attributes"]),
    "WorkflowTask": _obj({
        "task_token": STR, "workflow_id": STR, "run_id": STR, "workflow_type": STR, "scheduled_event_id": INT,
        "attempt": INT, "started_time": INT, "events": {"type": "array", "items": _ref("HistoryEvent")},
        "query": _obj({"query_id": STR, "query_type": STR, "args": ARRAY}), "traceparent": NULL_STR,
        "updates": {"type": "array", "items": _obj({"update_id": STR, "name": STR, "input": JSON_TEXT},
                                                   ["update_id", "name"])},
    }, ["task_token", "workflow_id", "run_id", "workflow_type", "scheduled_event_id", "attempt", "events"]),
    "ActivityTask": _obj({
        "task_token": STR, "workflow_id": STR, "run_id": STR, "workflow_type": STR, "activity_id": STR,
        "activity_type": STR, "input": JSON_TEXT, "attempt": INT, "scheduled_event_id": INT,
        "schedule_to_close_timeout_ms": MS, "start_to_close_timeout_ms": MS, "heartbeat_timeout_ms": MS,
        "heartbeat_details": JSON_TEXT, "scheduled_time": INT, "traceparent": NULL_STR,
    }, ["task_token", "workflow_id", "run_id", "activity_id", "activity_type", "attempt"]),
    "Outcome": _obj({"status": STR, "run_id": STR, "result": JSON_TEXT, "failure": _ref("Failure"),
                     "new_run_id": STR, "details": JSON_TEXT}, ["status"]),
    "DescribeResponse": _obj({
        "workflow_id": STR, "run_id": STR, "workflow_type": STR, "task_queue": STR,
        "status": {"type": "string", "enum": ["Running", "Completed", "Failed", "TimedOut", "Terminated",
                                              "ContinuedAsNew", "Canceled"]},
        "start_time": INT, "close_time": {"type": ["integer", "null"]}, "history_length": INT,
        "new_run_id": NULL_STR, "memo": {"type": ["object", "null"]}, "history_size_bytes": INT,
        "search_attributes": {"type": ["object", "null"]},
        "attempt": INT, "reset_from_run_id": NULL_STR, "reset_to_run_ids": {"type": "array", "items": STR},
        "terminate_reason": NULL_STR, "failure": {"type": ["object", "null"]},
        "cancel_details": JSON_TEXT,
        "pending_activities": {"type": "array", "items": {"type": "object"}},
        "pending_timers": {"type": "array", "items": {"type": "object"}},
        "pending_children": {"type": "array", "items": {"type": "object"}},
        "workflow_task": {"type": ["object", "null"]},
    }, ["workflow_id", "run_id", "status", "history_length"]),
    "WorkflowExecutionInfo": _obj({
        "workflow_id": STR, "run_id": STR, "workflow_type": NULL_STR, "task_queue": NULL_STR, "status": STR,
        "start_time": {"type": ["integer", "null"]}, "execution_time": {"type": ["integer", "null"]},
        "close_time": {"type": ["integer", "null"]}, "history_length": INT, "parent_workflow_id": NULL_STR,
        "parent_run_id": NULL_STR, "memo": {"type": ["object", "null"]},
        "search_attributes": {"type": ["object", "null"]},
    }, ["workflow_id", "run_id", "status"], description="A run's visibility row (times in ms since the epoch)"),
}

_QUERY: Schema = {"type": "string", "maxLength": MAX_QUERY_CHARS,
                  "description": "list filter, e.g. WorkflowType = 'Order' AND ExecutionStatus = 'Running'"
                                 " ORDER BY StartTime DESC (README, 'Finding workflows')"}

# Operations with a second success status, answered with the same schema.
_ALSO_OK: dict[str, tuple[int, str]] = {"register_search_attribute": (200, "Registered already, with this type")}

# operationId -> (summary, request body schema or None, query parameters, success status, answer schema)
# An item answered 503 (or 429) on its line: the wait a lone call's Retry-After would ask.
_ITEM_RETRY_AFTER: Schema = {"type": "integer", "description": "an item answered 503 or 429: milliseconds to"
                                                               " wait before sending it again"}
_OPS: dict[str, tuple[str, Schema | None, dict[str, Schema], int, Schema]] = {
    "start": ("Start a workflow run; with wait_seconds, also wait for its outcome. With cron_schedule, start"
              " nothing now: create the schedule cron-{workflow_id} whose firings start runs of this workflow id",
              _body({**_START_FIELDS, "id_conflict_policy": _CONFLICT, "search_attributes": _SEARCH_ATTRIBUTES,
                     "wait_seconds": {**WAIT_S, "default": 0},
                     "cron_schedule": {"type": ["string", "null"], "maxLength": 1000},
                     "retry_policy": _WORKFLOW_RETRY},
                    ["workflow_id", "workflow_type", "task_queue"]), {},
              201, _obj({"run_id": {"type": ["string", "null"]}, "workflow_id": STR, "outcome": _ref("Outcome"),
                         "schedule_id": STR, "next_action_times": {"type": "array", "items": STR}})),
    "list_workflows": ("List workflow runs matching a query, a page at a time", None,
                       {"query": _QUERY,
                        "page_size": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": 100},
                        "next_page_token": STR}, 200,
                       _obj({"executions": {"type": "array", "items": _ref("WorkflowExecutionInfo")},
                             "next_page_token": NULL_STR}, ["executions"])),
    "count_workflows": ("Count workflow runs matching a query (GROUP BY ExecutionStatus: per status)", None,
                        {"query": _QUERY}, 200,
                        _obj({"count": INT, "groups": {"type": "array", "items": _obj(
                            {"group_values": {"type": "array", "items": STR}, "count": INT})}}, ["count"])),
    "list_search_attributes": ("The search attributes of the namespace: built-in and registered", None, {}, 200,
                               _obj({"built_in": {"type": "object"}, "custom": {"type": "object"}})),
    "register_search_attribute": (
        "Register a custom search attribute (201; 200 if it exists with this type)",
        _body({"name": {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9_]*$", "maxLength": 100},
               "type": {"type": "string", "enum": [t.value for t in AttributeType]}}, ["name", "type"]),
        {}, 201, _obj({"name": STR, "type": STR})),
    "signal_with_start": ("Signal a workflow, starting it first if no run is open (the path names the workflow)",
                          _body({**_START_FIELDS, "signal_name": NAME, "signal_input": ARRAY,
                                 "search_attributes": _SEARCH_ATTRIBUTES},
                                ["workflow_type", "task_queue", "signal_name"]), {}, 200, _obj({"run_id": STR})),
    "signal": ("Signal a workflow run", _body({"signal_name": NAME, "input": ARRAY, "run_id": ID,
                                               "request_id": ID, "identity": ID}, ["signal_name"]), {}, 200, EMPTY),
    "terminate": ("Terminate a workflow run", _body({"reason": TEXT, "run_id": ID, "request_id": ID,
                                                     "identity": ID}), {}, 200, EMPTY),
    "cancel": ("Ask a workflow run to cancel (workflow code sees asyncio.CancelledError)",
               _body({"reason": TEXT, "run_id": ID, "request_id": ID, "identity": ID}), {}, 200, EMPTY),
    "reset": ("Reset a workflow run to one of its workflow tasks: a new run replays the history up to it and"
              " goes on with the current code; the old run, if open, is terminated naming the new one",
              _body({"reset_point": {"type": "string", "enum": ["first", "last", ""], "default": "",
                                     "description": "first, last (completed) or '': the task event_id names"},
                     "event_id": {**ID_INT, "description": "a WorkflowTaskStarted/Completed/Failed/TimedOut event"},
                     "reapply_signals": {"type": "boolean", "default": True},
                     "reason": TEXT, "run_id": ID, "request_id": ID, "identity": ID}), {}, 200,
              _obj({"run_id": STR}, ["run_id"])),
    "update": ("Run an update on a workflow run and wait (up to wait_seconds) for its outcome; stage"
               " 'requested' means the wait ran out: ask again with the same update_id",
               _body({"update_id": NAME, "update_name": NAME, "input": ARRAY, "run_id": ID,
                      "wait_for_stage": {"type": "string", "enum": ["accepted", "completed"], "default": "completed"},
                      "wait_seconds": {**WAIT_S, "default": 30}, "request_id": ID, "identity": ID},
                     ["update_id", "update_name"]), {}, 200,
               _obj({"update_id": STR, "stage": {"type": "string",
                                                 "enum": ["requested", "accepted", "completed", "rejected"]},
                     "result": JSON_TEXT, "failure": _ref("Failure"),
                     "run_id": {**_nullable(STR), "description": "the run that answered: ask it again"}},
                    ["update_id", "stage"])),
    "query": ("Query a workflow run through a worker",
              _body({"query_type": NAME, "args": ARRAY, "run_id": ID,
                     "timeout_ms": {"type": "integer", "minimum": 0, "maximum": 600_000, "default": 10_000}},
                    ["query_type"]), {},
              200, _obj({"result": JSON_TEXT})),
    "activity_task_token": ("The task token of an activity's running attempt, for completing it from outside"
                            " (404 ActivityNotFound when none is running, or it runs on a task queue the"
                            " caller may not poll)", None, {"run_id": ID}, 200,
                            _obj({"task_token": STR}, ["task_token"])),
    "describe": ("Describe a workflow run", None, {"run_id": ID}, 200, _ref("DescribeResponse")),
    "history": ("Read a page of a run's history", None,
                {"run_id": ID, "page_size": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 1000},
                 "next_page_token": STR}, 200,
                _obj({"run_id": STR, "events": {"type": "array", "items": _ref("HistoryEvent")},
                      "next_page_token": NULL_STR})),
    "result": ("Wait for a run to close and return its outcome", None,
               {"run_id": ID, "wait_seconds": {**WAIT_S, "default": 30}},
               200, _ref("Outcome")),
    "poll_workflow_tasks": ("Long-poll a task queue for workflow tasks", _POLL, {}, 200,
                            _obj({"tasks": {"type": "array", "items": _ref("WorkflowTask")}}, ["tasks"])),
    "complete_workflow_task": ("Complete a workflow task with commands",
                               _body({"task_token": STR, "commands": {"type": "array", "items": _ref("Command")},
                                      "identity": ID, "runs_timers_ahead": {"type": "boolean", "default": False}},
                                     ["task_token"]), {}, 200, EMPTY),
    "timer_ahead_workflow_task": ("Send the workflow task a worker ran on a user timer's firing, under the token "
                                  "of the last task it was handed (docs/protocol.md, timer run-ahead); history "
                                  "records it only if the timer is due and pending and the task is the one it "
                                  "would have handed out, otherwise the timer fires as usual",
                                  _body({"task_token": STR, "timer_id": NAME, "identity": ID,
                                         "workflow_task": _ref("RunAheadWorkflowTask")},
                                        ["task_token", "timer_id", "workflow_task"]), {}, 200, EMPTY),
    "fail_workflow_task": ("Fail a workflow task", _body({"task_token": STR, "cause": ID,
                                                          "failure": _ref("Failure"), "identity": ID},
                                                         ["task_token"]), {}, 200, EMPTY),
    "respond_query": ("Answer a query task: result (JSON text) or error", _body({"result": JSON_TEXT,
                                                                                "error": _ref("Failure")}),
                      {}, 200, EMPTY),
    "poll_activity_tasks": ("Long-poll a task queue for activity tasks", _POLL, {}, 200,
                            _obj({"tasks": {"type": "array", "items": _ref("ActivityTask")}}, ["tasks"])),
    "complete_activity_task": ("Complete an activity attempt",
                               _body({"task_token": STR, "result": JSON_TEXT, "identity": ID,
                                      "workflow_task": _ref("RunAheadWorkflowTask"),
                                      "current_attempt": _CURRENT_ATTEMPT}, ["task_token"]),
                               {}, 200, EMPTY),
    "fail_activity_task": ("Fail an activity attempt", _body({"task_token": STR, "failure": _ref("Failure"),
                                                              "identity": ID, "last_heartbeat_details": JSON_TEXT,
                                                              "current_attempt": _CURRENT_ATTEMPT},
                                                             ["task_token", "failure"]),
                           {}, 200, EMPTY),
    "heartbeat_activity_task": ("Heartbeat an activity attempt",
                                _body({"task_token": STR, "details": JSON_TEXT, "identity": ID,
                                       "current_attempt": _CURRENT_ATTEMPT}, ["task_token"]),
                                {}, 200, _obj({"cancel_requested": {"type": "boolean"}}, ["cancel_requested"])),
    "cancel_activity_task": ("Report an activity attempt stopped on its cancel request",
                             _body({"task_token": STR, "details": JSON_TEXT, "identity": ID,
                                    "current_attempt": _CURRENT_ATTEMPT}, ["task_token"]),
                             {}, 200, EMPTY),
    "start_batch": ("Start several workflow runs at once, each as POST /workflows would (with wait_seconds,"
                    " waiting for its outcome too); each item's result is written, on a line of its own, as"
                    " soon as it is known, so the results come in the order they finish, each naming its index",
                    _body({"starts": {"type": "array", "minItems": 1, "maxItems": 1000, "items": {
                        "type": "object", "description": "what POST /workflows takes alone; a bad item gets its"
                                                         " error in its result (status 400), not the whole call"}}},
                          ["starts"]), {}, 200,
                    _obj({"results": {"type": "array", "items": _obj({
                        "index": INT, "status": INT, "answer": {"type": "object"}, "error": STR, "message": STR,
                        "field": NULL_STR, "retry_after_ms": _ITEM_RETRY_AFTER}, ["index", "status"])}}, ["results"])),
    "result_batch": ("Wait for several runs' outcomes at once, each as GET /workflows/{workflow_id}/result would;"
                     " each item's outcome is written, on a line of its own, as soon as it is known (status"
                     " Running when its wait ran out), so they come in the order they close, each naming its index",
                     _body({"waits": {"type": "array", "minItems": 1, "maxItems": 1000, "items": {
                         "type": "object", "description": "{workflow_id, run_id, wait_seconds}; a bad item gets its"
                                                          " error in its result (status 400), not the whole call"}}},
                           ["waits"]), {}, 200,
                     _obj({"results": {"type": "array", "items": _obj({
                         "index": INT, "status": INT, "answer": _ref("Outcome"), "error": STR, "message": STR,
                         "field": NULL_STR, "retry_after_ms": _ITEM_RETRY_AFTER}, ["index", "status"])}}, ["results"])),
    "answer_tasks": ("Send several task answers at once (each runs as its own operation would)",
                     _body({"answers": {"type": "array", "minItems": 1, "maxItems": 1000, "items": {
                         # An answer's own errors (no operation, an unknown one, a bad body) are
                         # answered in its result, as the operation alone would answer them.
                         "type": "object", "description": "{operation, body}: an answer a bad item gets in its "
                                                          "result (status 400), not for the whole call",
                         "properties": {
                             "operation": {"type": "string", "description": "one of "
                                                                            + ", ".join(sorted(ANSWER_OPERATIONS))},
                             "body": {"type": "object", "description": "the body the operation takes alone"}}},
                     }}, ["answers"]), {}, 200,
                     _obj({"results": {"type": "array", "items": _obj({
                         "status": INT, "answer": {"type": "object"}, "error": STR, "message": STR,
                         "field": NULL_STR, "retry_after_ms": _ITEM_RETRY_AFTER}, ["status"])}}, ["results"])),
}

_DURATION: Schema = {"type": ["string", "integer"],
                     "description": "30d, 12h, 90m, 45s, 500ms, 2w; a bare number is days (retention) or seconds; "
                                    "at most 36600d"}
_NAMESPACE_FIELDS: dict[str, Schema] = {
    "description": TEXT, "retention": _DURATION,
    "owner_email": {"type": "string", "maxLength": 320, "pattern": r"^([^@\s]+@[^@\s]+)?$",
                    "description": "an email address; empty for none"}}
_TIMEOUT = {**DURATION_MS, "description": "milliseconds (0: none)"}
_SCHEDULE = _body({
    "schedule_id": {**NAME, "maxLength": 200},
    "spec": _body({"cron": STR, "interval": _DURATION, "offset": _DURATION, "jitter": _DURATION,
                   "time_zone": {"type": "string", "description": "IANA name, default UTC"}},
                  description="exactly one of cron or interval"),
    "action": _body({"workflow_type": NAME, "task_queue": NAME, "input": ARRAY, "execution_timeout_ms": _TIMEOUT,
                     "run_timeout_ms": _TIMEOUT, "workflow_task_timeout_ms": {**_TIMEOUT, "default": 10_000},
                     "memo": _START_FIELDS["memo"], "search_attributes": _SEARCH_ATTRIBUTES},
                    ["workflow_type", "task_queue"],
                    not_null=("execution_timeout_ms", "run_timeout_ms", "workflow_task_timeout_ms")),
    "overlap_policy": {"type": "string", "enum": ["skip", "buffer_one", "allow_all", "cancel_other", "terminate_other"],
                       "default": "skip"},
    "catchup_window": _DURATION, "paused": {"type": "boolean"}, "note": TEXT,
}, ["schedule_id", "spec", "action"], not_null=("overlap_policy", "paused"))
_RATE: Schema = {"type": "number", "minimum": 0.001, "maximum": 1e9}
_LIMITS = _body({"rps": {**_RATE, "description": "user API calls a second on each frontend"},
                 "concurrent_polls": {"type": "integer", "minimum": 1, "maximum": 1_000_000_000,
                                      "description": "long polls open at once on each frontend"},
                 "visibility_rps": {**_RATE, "description": "list and count queries a second on each frontend"},
                 "answer_rps": {**_RATE, "description": "worker answers (task answers, heartbeats, query answers)"
                                                        " a second on each frontend"}},
                description="the namespace's own limits (docs/security.md); null: the cluster's default")
COMPONENTS["Namespace"] = _obj({"name": STR, **_NAMESPACE_FIELDS, "retention_ms": INT, "state": STR,
                                "created_time": STR, "updated_time": STR, "limits": _LIMITS})
COMPONENTS["Schedule"] = _obj({**_SCHEDULE["properties"], "next_action_times": {"type": "array", "items": STR},
                               "recent_actions": ARRAY, "buffered": NULL_STR, "pending_triggers": INT,
                               "last_workflow_id": NULL_STR, "actions_started": INT, "actions_skipped": INT,
                               "invalid_schedule_error": {**NULL_STR, "description": "why the schedule no longer"
                                                          " fires (null: it fires)"}})
_NOTE = _body({"note": TEXT})
# A create sent again with its request id (its first answer lost) is answered as the first.
_CREATE_REQUEST_ID: Schema = {**ID, "maxLength": 200,
                              "description": "the same id again gets the first call's answer (not 409, 404)"}
_SCHEDULE_CREATE = {**_SCHEDULE, "properties": {**_SCHEDULE["properties"], "request_id": _nullable(_CREATE_REQUEST_ID)}}
_OPS.update({
    "create_namespace": ("Register a namespace with a retention period",
                         _body({"name": NAMESPACE, **_NAMESPACE_FIELDS, "request_id": _CREATE_REQUEST_ID},
                               ["name", "retention"]), {}, 201,
                         _ref("Namespace")),
    "list_namespaces": ("List the registered namespaces", None, {}, 200,
                        _obj({"namespaces": {"type": "array", "items": _ref("Namespace")}})),
    "describe_namespace": ("Describe a namespace", None, {}, 200, _ref("Namespace")),
    "update_namespace": ("Change a namespace's description, owner, retention or limits",
                         _body({**_NAMESPACE_FIELDS, "limits": _LIMITS}), {}, 200, _ref("Namespace")),
    "create_schedule": ("Create a schedule", _SCHEDULE_CREATE, {}, 201, _ref("Schedule")),
    "list_schedules": ("List a namespace's schedules", None, {}, 200,
                       _obj({"schedules": {"type": "array", "items": _ref("Schedule")}})),
    "describe_schedule": ("Describe a schedule: next times, recent actions", None, {}, 200, _ref("Schedule")),
    "delete_schedule": ("Delete a schedule (the workflows it started carry on)", None,
                        {"request_id": _CREATE_REQUEST_ID}, 200, EMPTY),
    "pause_schedule": ("Pause a schedule, with a note", _NOTE, {}, 200, _ref("Schedule")),
    "unpause_schedule": ("Resume a schedule from now, with a note", _NOTE, {}, 200, _ref("Schedule")),
    "trigger_schedule": ("Start the schedule's workflow now, whatever its overlap policy", _body({}), {}, 200,
                         _obj({"workflow_id": STR, "scheduled_time": STR})),
})

_TIME: Schema = {"type": ["string", "null"], "description": "ISO 8601 UTC"}
COMPONENTS["TaskQueueKind"] = _obj({
    "kind": {"type": "string", "enum": [k.value for k in TaskKind]},
    "pollers": {"type": "array", "description": "identities that polled in the last 5 minutes, most recent first",
                "items": _obj({"identity": STR, "last_poll_time": STR})},
    "last_poll_time": _TIME,
    "polls_waiting": {"type": ["integer", "null"], "description": "null: no matching instance answered"},
    "tasks_waiting": INT, "ready": INT, "backlog": INT, "oldest_backlog_time": _TIME})
_OPS["describe_task_queue"] = (
    "Describe a task queue: its pollers (identity, last poll time) and the tasks waiting, per kind", None, {},
    200, _obj({"namespace": STR, "task_queue": STR, "pollers_known": {"type": "boolean"},
               "kinds": {"type": "array", "items": _ref("TaskQueueKind")}}))

_ERRORS = {"400": "Invalid argument (the field is named) or refused",
           "401": "Unauthenticated: no credential, or one that does not verify (when auth is configured)",
           "403": "PermissionDenied: the caller lacks the permission in this namespace or task queue, or the "
                  "task token is forged, altered or of another namespace",
           "404": "Not found (NamespaceNotFound: the namespace is not registered)",
           "409": "Workflow already started, or closed before an update completed, or already exists",
           "429": "ResourceExhausted: the namespace is over one of its limits on this frontend; Retry-After says"
                  " when to try again, and the body names the namespace, the limit and its value",
           "503": "Unavailable: the broker, the database or another dependency cannot serve now, or history"
                  " has not answered within the answer bound (Busy); Retry-After says when to come back (same"
                  " request_id). A read that found no connection of its kind's share of the pool within its"
                  " bound names the share (limit) and its size (limit_value)", "504": "Timed out"}
# Every 429 and 503 of the API says when to try again, in whole seconds (RFC 9110).
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again", "required": True,
                                "schema": {"type": "integer", "minimum": 0}}}


def _path_params(path: str) -> list[Schema]:
    names = [seg[1:-1] for seg in path.split("/") if seg.startswith("{")]
    return [{"name": n, "in": "path", "required": True, "schema": NAMESPACE if n == "namespace" else NAME}
            for n in names]


def request_schema(operation_id: str) -> Schema | None:
    """The body schema of an operation (None: it takes no body), as the document shows it."""
    return _OPS[operation_id][1]


def document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for method, full, op_id in [(m, PREFIX + p, o) for m, p, o in ROUTES] + ADMIN_ROUTES + TASK_QUEUE_ROUTES:
        summary, body, query, status, answer = _OPS[op_id]
        op: dict[str, Any] = {
            "operationId": op_id, "summary": summary,
            "parameters": _path_params(full) + [
                {"name": n, "in": "query", "required": False, "schema": s} for n, s in query.items()
            ],
            "responses": {
                str(status): {"description": "OK", "content": {"application/json": {"schema": answer}}},
                **{code: {"description": text, "content": {"application/json": {"schema": _ref("Error")}},
                          **({"headers": _RETRY_AFTER} if code in ("429", "503") else {})}
                   for code, text in _ERRORS.items()},
            },
        }
        if op_id in _ALSO_OK:
            code, text = _ALSO_OK[op_id]
            op["responses"][str(code)] = {"description": text, "content": {"application/json": {"schema": answer}}}
        if body is not None:
            op["requestBody"] = {"required": False, "content": {"application/json": {"schema": body}}}
        paths.setdefault(full, {})[method.lower()] = op
    health = {"type": "object", "required": ["status"],
              "properties": {"status": {"enum": ["ok", "degraded", "stalled"]}}, "additionalProperties": True}
    paths["/health"] = {"get": {
        "operationId": "health", "security": [],
        "summary": "Liveness; 503 when a history shard of this process is stalled; status degraded (200)"
                   " while commands wait with no reply from history",
        "responses": {code: {"description": text, "content": {"application/json": {"schema": health}}}
                      for code, text in (("200", "OK"), ("503", "A shard stopped or retrying too long"))}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Kadence frontend API", "version": "1.0.0",
                 "description": "The public HTTP/JSON API of Kadence (see docs/protocol.md)."},
        "paths": paths,
        "components": {"schemas": COMPONENTS, "securitySchemes": SECURITY_SCHEMES},
        # Every call under /api/v1 when KADENCE_AUTH_CONFIG is set (services/frontend/auth.py).
        "security": [{"bearer": []}],
    }


SECURITY_SCHEMES: dict[str, Schema] = {
    "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "API key or JWT",
               "description": "Authorization: Bearer <API key or JWT>, with per-namespace grants "
                              "(read, write, worker, admin); required when the server has an auth configuration"},
}
