"""The one validator of commands (services/common/validation.py): what it refuses, naming
the field, and that whatever it lets through encodes and fits the store's columns."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kadence_protocol import avro
from services.common import validation as v
from services.frontend import InvalidArgument
from services.frontend import validation as fv

pytestmark = pytest.mark.timeout(120)

BIGINT = 2**63 - 1


def start(**kw: Any) -> dict[str, Any]:
    base = {"namespace": "default", "workflow_id": "w", "workflow_type": "T", "task_queue": "q",
            "input": '["x"]', "execution_timeout_ms": 0, "workflow_task_timeout_ms": 10000,
            "request_id": "r", "identity": "", "reply_to": None}
    base.update(kw)
    return base


def task(**kw: Any) -> dict[str, Any]:
    base = {"namespace": "default", "workflow_id": "w", "run_id": "r1", "scheduled_event_id": 2, "attempt": 1,
            "identity": "worker"}
    base.update(kw)
    return base


def cancel(**kw: Any) -> dict[str, Any]:
    base = {"namespace": "default", "workflow_id": "w", "run_id": None, "reason": "stop", "request_id": "c1",
            "identity": "me", "reply_to": None}
    base.update(kw)
    return base


def refused_field(kind: str, cmd: dict[str, Any], limits: v.Limits = v.DEFAULT_LIMITS) -> str:
    with pytest.raises(v.Invalid) as info:
        v.check_command(kind, cmd, limits)
    assert info.value.field in info.value.message  # the reason names the field
    return info.value.field


def test_a_good_start_passes() -> None:
    v.check_command("StartWorkflowExecution", start())


@pytest.mark.parametrize(("cmd", "field"), [
    (start(workflow_id=""), "workflow_id"),
    (start(namespace="../../etc"), "namespace"),
    (start(workflow_type=""), "workflow_type"),
    (start(task_queue=""), "task_queue"),
    (start(workflow_type="T\x00"), "workflow_type"),
    (start(task_queue="q\x00"), "task_queue"),
    (start(request_id="r\x00"), "request_id"),
    (start(input='{"not": "an array"}'), "input"),
    (start(input="[NaN]"), "input"),
    (start(input="[Infinity]"), "input"),
    (start(input="[1e400]"), "input"),
    (start(input="[1,"), "input"),
    (start(workflow_id="w" * 100_000), "workflow_id"),
    (start(workflow_id="\U0001f600" * 600), "workflow_id"),  # 600 characters, 2400 bytes
    (start(execution_timeout_ms=-1), "execution_timeout_ms"),
    (start(execution_timeout_ms=BIGINT), "execution_timeout_ms"),
    (start(workflow_task_timeout_ms=BIGINT - 5), "workflow_task_timeout_ms"),
    (start(input="[" + "1," * (1024 * 1024) + "1]"), "input"),
])
def test_a_bad_start_is_refused_naming_the_field(cmd: dict[str, Any], field: str) -> None:
    assert refused_field("StartWorkflowExecution", cmd) == field


def _activity_on(queue: str) -> dict[str, Any]:
    return task(started_time=0, commands=[{"command_type": "ScheduleActivityTask", "attributes": {
        "activity_id": "1", "activity_type": "a", "task_queue": queue, "input": "[]",
        "schedule_to_close_timeout_ms": 0, "schedule_to_start_timeout_ms": 0, "start_to_close_timeout_ms": 1,
        "heartbeat_timeout_ms": 0, "retry_policy": None}}])


def _child(**kw: Any) -> dict[str, Any]:
    attrs = {"workflow_id": "c", "workflow_type": "T", "task_queue": "", "input": "[]", "execution_timeout_ms": 0,
             "run_timeout_ms": 0, "workflow_task_timeout_ms": 0, **kw}
    return task(started_time=0, commands=[{"command_type": "StartChildWorkflowExecution", "attributes": attrs}])


def _continue_on(queue: str) -> dict[str, Any]:
    return task(started_time=0, commands=[{"command_type": "ContinueAsNewWorkflowExecution",
                                           "attributes": {"workflow_type": "", "task_queue": queue, "input": None}}])


@pytest.mark.parametrize("dots", [".", ".."])
@pytest.mark.parametrize(("kind", "make", "field"), [
    ("StartWorkflowExecution", lambda d: start(workflow_id=d), "workflow_id"),
    ("StartWorkflowExecution", lambda d: start(task_queue=d), "task_queue"),
    ("SignalWithStartWorkflowExecution", lambda d: start(workflow_id=d, signal_name="s", signal_input=None),
     "workflow_id"),
    ("RespondWorkflowTaskCompleted", _activity_on, "commands[0].attributes.task_queue"),
    ("RespondWorkflowTaskCompleted", lambda d: _child(workflow_id=d), "commands[0].attributes.workflow_id"),
    ("RespondWorkflowTaskCompleted", lambda d: _child(task_queue=d), "commands[0].attributes.task_queue"),
    ("RespondWorkflowTaskCompleted", _continue_on, "commands[0].attributes.task_queue"),
])
def test_a_new_workflow_or_queue_named_by_a_dot_segment_is_refused(
        dots: str, kind: str, make: Any, field: str) -> None:
    """'.' and '..' in a URL path are resolved away by every HTTP client: a run of that id, or a
    queue of that name, could be started but never described, signaled or polled over HTTP."""
    assert refused_field(kind, make(dots)) == field
    v.check_command(kind, make("..." if dots == ".." else ".x"))  # only the two dot segments


def test_a_command_to_a_dot_workflow_an_older_build_started_still_passes() -> None:
    # Only new names are refused: an existing run keeps taking what Kafka addresses to it.
    v.check_command("RequestCancelWorkflowExecution", cancel(workflow_id=".."))


def test_nan_is_refused_with_a_clear_message() -> None:
    with pytest.raises(v.Invalid, match="NaN and Infinity are not JSON numbers"):
        v.check_command("StartWorkflowExecution", start(input="[NaN]"))


def test_json_the_fast_parser_refuses_is_still_taken_when_valid() -> None:
    # Integers beyond 64 bits and escaped lone surrogates are JSON all the same.
    v.check_command("StartWorkflowExecution", start(input="[123456789012345678901234567890]"))
    v.check_command("StartWorkflowExecution", start(input=json.dumps(["\ud800"])))


def test_the_payload_limit_is_configurable() -> None:
    small = v.Limits(max_payload_bytes=10)
    assert refused_field("StartWorkflowExecution", start(input='["0123456789"]'), small) == "input"
    v.check_command("StartWorkflowExecution", start(input='["0123456789"]'))


def test_a_missing_field_is_named() -> None:
    cmd = start()
    del cmd["task_queue"]
    assert refused_field("StartWorkflowExecution", cmd) == "task_queue"


@pytest.mark.parametrize(("kind", "cmd", "field"), [
    ("SignalWorkflowExecution", {"namespace": "default", "workflow_id": "w", "run_id": None, "signal_name": "",
                                 "input": None, "request_id": "", "identity": ""}, "signal_name"),
    ("SignalWorkflowExecution", {"namespace": "default", "workflow_id": "w", "run_id": None, "signal_name": "s",
                                 "input": '"x"', "request_id": "", "identity": ""}, "input"),
    ("SignalWithStartWorkflowExecution", start(signal_name="s\x00", signal_input=None), "signal_name"),
    ("SignalWithStartWorkflowExecution", start(signal_name="s", signal_input="{}"), "signal_input"),
    # A cron start creates a schedule, which a Kafka start record cannot (yet): dead-lettered.
    ("StartWorkflowExecution", start(cron_schedule="*/5 * * * *"), "cron_schedule"),
    ("TerminateWorkflowExecution", {"namespace": "default", "workflow_id": "w", "run_id": None,
                                    "reason": "x\x00", "request_id": "", "identity": ""}, "reason"),
    ("RecordWorkflowTaskStarted", task(started_time=-1), "started_time"),
    ("RecordActivityTaskStarted", task(scheduled_event_id=-2, started_time=0), "scheduled_event_id"),
    ("RespondWorkflowTaskCompleted", task(started_time=0, commands=[
        {"command_type": "StartTimer", "attributes": {"timer_id": "1", "start_to_fire_timeout_ms": BIGINT}}]),
     "commands[0].attributes.start_to_fire_timeout_ms"),
    ("RespondWorkflowTaskCompleted", task(started_time=0, commands=[
        {"command_type": "CompleteWorkflowExecution", "attributes": {"result": "NaN"}}]),
     "commands[0].attributes.result"),
    ("RespondWorkflowTaskCompleted", task(started_time=0, commands=[
        {"command_type": "ContinueAsNewWorkflowExecution",
         "attributes": {"workflow_type": "T\x00", "task_queue": "", "input": None}}]),
     "commands[0].attributes.workflow_type"),
    ("RespondWorkflowTaskCompleted", task(started_time=0, commands=[
        {"command_type": "ContinueAsNewWorkflowExecution",
         "attributes": {"workflow_type": "", "task_queue": "", "input": None, "search_attributes": "[1]"}}]),
     "commands[0].attributes.search_attributes"),
    ("RespondWorkflowTaskCompleted", task(started_time=0, commands=[
        {"command_type": "ScheduleActivityTask", "attributes": {
            "activity_id": "1", "activity_type": "a", "task_queue": "", "input": "[]",
            "schedule_to_close_timeout_ms": 0, "schedule_to_start_timeout_ms": 0, "start_to_close_timeout_ms": 1,
            "heartbeat_timeout_ms": 0, "retry_policy": {
                "initial_interval_ms": 1, "backoff_coefficient": float("nan"), "maximum_interval_ms": 0,
                "maximum_attempts": 0, "non_retryable_error_types": []}}}]),
     "commands[0].attributes.retry_policy.backoff_coefficient"),
    ("RespondWorkflowTaskFailed", task(cause="c", failure={"message": "m\x00", "type": "", "stack_trace": "",
                                                           "non_retryable": False, "details": None}),
     "failure.message"),
    ("RespondActivityTaskCompleted", task(result="{", workflow_task=None), "result"),
    ("RespondActivityTaskFailed", task(failure={"message": "m", "type": "", "stack_trace": "",
                                                "non_retryable": False, "details": "Infinity"}),
     "failure.details"),
    ("RecordActivityTaskHeartbeat", task(details="x"), "details"),
    ("RequestCancelWorkflowExecution", cancel(reason="x\x00"), "reason"),
    ("RequestCancelWorkflowExecution", cancel(reason="x" * (v.MAX_TEXT_CHARS + 1)), "reason"),
    ("RequestCancelWorkflowExecution", cancel(workflow_id=""), "workflow_id"),
    ("RequestCancelWorkflowExecution", cancel(namespace="a/b"), "namespace"),
    ("RequestCancelWorkflowExecution", cancel(run_id="r\x00"), "run_id"),
    ("RequestCancelWorkflowExecution", cancel(request_id="\U0001f600" * 600), "request_id"),
    ("RequestCancelWorkflowExecution", cancel(identity="i\x00"), "identity"),
    ("RespondActivityTaskCanceled", task(details="[NaN]"), "details"),
    ("RespondActivityTaskCanceled", task(details=None, identity="w\x00"), "identity"),
    ("RespondActivityTaskCanceled", task(details=None, scheduled_event_id=-1), "scheduled_event_id"),
    ("RespondWorkflowTaskCompleted", task(started_time=0, commands=[
        {"command_type": "RequestCancelActivityTask", "attributes": {"scheduled_event_id": 0}}]),
     "commands[0].attributes.scheduled_event_id"),
    ("RespondWorkflowTaskCompleted", task(started_time=0, commands=[
        {"command_type": "RequestCancelActivityTask", "attributes": {"scheduled_event_id": "5"}}]),
     "commands[0].attributes.scheduled_event_id"),
    ("RespondWorkflowTaskCompleted", task(started_time=0, commands=[
        {"command_type": "RequestCancelActivityTask", "attributes": {}}]),
     "commands[0].attributes.scheduled_event_id"),
    ("RespondWorkflowTaskCompleted", task(started_time=0, commands=[
        {"command_type": "CancelWorkflowExecution", "attributes": {"details": "Infinity"}}]),
     "commands[0].attributes.details"),
    ("RespondWorkflowTaskCompleted", task(started_time=0, commands=[
        {"command_type": "CancelTimer", "attributes": {"timer_id": "t\x00"}}]),
     "commands[0].attributes.timer_id"),
    ("RespondActivityTaskCompleted", task(result='"r"', workflow_task={
        "after_scheduled_event_id": 2, "after_started_time": 1, "started_time": 2, "ahead_id": 7,
        "after_ahead_id": 0, "commands": [{"command_type": "CancelWorkflowExecution",
                                           "attributes": {"details": "{"}}]}),
     "workflow_task.commands[0].attributes.details"),
])
def test_every_command_kind_is_checked(kind: str, cmd: dict[str, Any], field: str) -> None:
    assert refused_field(kind, cmd) == field


def test_what_the_sdk_sends_passes() -> None:
    # A worker picks run-ahead ids over the whole of a long.
    v.check_command("RespondActivityTaskCompleted", task(result='"r"', workflow_task={
        "after_scheduled_event_id": 2, "after_started_time": 1, "started_time": 2, "commands": [],
        "ahead_id": BIGINT, "after_ahead_id": BIGINT - 1}))


def test_the_cancellation_commands_the_sdk_sends_pass() -> None:
    v.check_command("RequestCancelWorkflowExecution", cancel())
    v.check_command("RequestCancelWorkflowExecution", cancel(run_id="r1", reason="", request_id="", identity=""))
    v.check_command("RespondActivityTaskCanceled", task(details=None))
    v.check_command("RespondActivityTaskCanceled", task(details='["cleaned up"]'))
    v.check_command("RespondWorkflowTaskCompleted", task(started_time=0, commands=[
        {"command_type": "RequestCancelActivityTask", "attributes": {"scheduled_event_id": 5}},
        {"command_type": "CancelTimer", "attributes": {"timer_id": "1"}},
        {"command_type": "CancelWorkflowExecution", "attributes": {"details": None}}]))


def test_every_kind_history_takes_has_a_check() -> None:
    # check_command lets kinds it does not know through: each kind kadence.requests takes
    # must be known, or a new command would skip the check on both ways in.
    from services.history.shard import HANDLERS
    for kind in HANDLERS:
        with pytest.raises(v.Invalid):
            v.check_command(kind, {})


def test_every_command_type_of_the_schema_has_a_check() -> None:
    types = avro.schemas().current["kadence.Command"]["fields"][0]["type"]["symbols"]
    for kind in types:
        try:
            v.commands([{"command_type": kind, "attributes": {}}], "commands")
        except v.Invalid as exc:
            assert exc.field != "commands[0].command_type", kind


# -- generated commands -------------------------------------------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10)
_payloads = st.one_of(
    st.none(), st.text(max_size=30), _json_values.map(json.dumps),
    st.just("[NaN]"), st.just("[Infinity]"), st.just("[1e999]"),
    st.lists(_json_values, max_size=3).map(json.dumps))
_names = st.one_of(st.text(max_size=40), st.text(min_size=990, max_size=1010), st.just("x\x00y"),
                   st.just("../../etc"), st.just(""))
_millis = st.one_of(st.integers(min_value=-2, max_value=10**6), st.just(BIGINT), st.just(v.MAX_DURATION_MS),
                    st.just(v.MAX_DURATION_MS + 1), st.integers(min_value=-(2**63), max_value=BIGINT))
_starts = st.fixed_dictionaries({
    "namespace": st.one_of(st.just("default"), _names), "workflow_id": _names, "workflow_type": _names,
    "task_queue": _names, "input": _payloads, "execution_timeout_ms": _millis,
    "workflow_task_timeout_ms": _millis, "request_id": _names, "identity": st.text(max_size=10),
    "reply_to": st.none() | st.just("tester")})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_starts)
def test_a_generated_start_is_refused_with_a_reason_or_fits_everything_downstream(cmd: dict[str, Any]) -> None:
    try:
        v.check_command("StartWorkflowExecution", cmd)
    except v.Invalid as exc:
        assert exc.field in cmd and exc.field in exc.message
        return
    # Taken: it encodes, every string is storable text, a timer at now + timeout fits a
    # bigint, the arguments are an array the SDK decodes, the ids fit a task token.
    avro.encode("StartWorkflowExecution", cmd)
    assert all("\x00" not in s for s in cmd.values() if isinstance(s, str))
    assert 0 <= cmd["execution_timeout_ms"] and 2**41 + cmd["execution_timeout_ms"] < 2**63
    assert cmd["input"] is None or isinstance(json.loads(cmd["input"]), list)
    assert 0 < len(cmd["workflow_id"]) <= 1000 and len(cmd["workflow_id"].encode()) <= v.MAX_NAME_BYTES
    assert len(cmd["workflow_id"].encode()) + len(cmd["request_id"].encode()) <= v.MAX_ID_PAIR_BYTES
    assert cmd["workflow_type"] and cmd["task_queue"]


def test_a_workflow_id_and_request_id_past_the_ledger_s_index_row_are_refused_naming_request_id() -> None:
    # Each within its own 2000 bytes, together past what the request_ids index takes: the
    # commit failed and the caller read PostgreSQL's "index row size 4024 exceeds ...".
    wide = "\u4e00" * 666  # 1998 bytes
    for kind, cmd in (("StartWorkflowExecution", start(workflow_id=wide, request_id=wide)),
                      ("SignalWorkflowExecution", {"namespace": "default", "workflow_id": wide, "run_id": None,
                                                   "signal_name": "go", "input": None, "request_id": wide,
                                                   "identity": "", "reply_to": None})):
        with pytest.raises(v.Invalid) as refused:
            v.check_command(kind, cmd)
        assert refused.value.field == "request_id" and "together" in refused.value.message
    v.check_command("StartWorkflowExecution", start(workflow_id=wide, request_id="\u4e00" * 134))  # 2400 bytes
    v.check_command("StartWorkflowExecution", start(workflow_id="w" * 1000, request_id="r" * 1000))


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({}, optional={
    "workflow_id": st.one_of(_names, st.integers()), "workflow_type": st.one_of(_names, st.none()),
    "task_queue": _names, "input": st.one_of(st.lists(_json_values, max_size=3), st.text(max_size=5),
                                             st.just([float("nan")]), st.just([float("inf")])),
    "execution_timeout_ms": st.one_of(_millis, st.floats(), st.booleans()),
    "workflow_task_timeout_ms": _millis, "request_id": st.one_of(_names, st.integers()),
}))
def test_a_generated_http_start_body_is_refused_naming_a_field_or_passes_the_history_check(
        body: dict[str, Any]) -> None:
    try:
        req = fv.start_request("default", body)
    except InvalidArgument as exc:
        assert exc.field in body or exc.field in ("workflow_id", "workflow_type", "task_queue")
        return
    record = {"namespace": req.namespace, "workflow_id": req.workflow_id, "workflow_type": req.workflow_type,
              "task_queue": req.task_queue, "input": req.input, "execution_timeout_ms": req.execution_timeout_ms,
              "workflow_task_timeout_ms": req.workflow_task_timeout_ms, "request_id": req.request_id or "r",
              "identity": req.identity, "reply_to": "frontend"}
    # What the frontend lets through, history takes (else a caller would wait for a reply
    # that never comes, then 504).
    v.check_command("StartWorkflowExecution", record)


def test_http_refuses_what_history_refuses_with_a_400_naming_the_field() -> None:
    body = {"workflow_id": "w", "workflow_type": "T\x00", "task_queue": "q"}
    with pytest.raises(InvalidArgument) as info:
        fv.start_request("default", body)
    assert info.value.field == "workflow_type" and info.value.status == 400
    with pytest.raises(InvalidArgument) as info:
        fv.start_request("default", {"workflow_id": "w", "workflow_type": "T", "task_queue": "q",
                                     "input": [float("nan")]})
    assert info.value.field == "input" and "NaN" in info.value.message


def test_a_lone_surrogate_is_refused_naming_the_field() -> None:
    with pytest.raises(v.Invalid, match="workflow_id"):
        v.name("a\ud800", "workflow_id")
    with pytest.raises(v.Invalid, match="input"):
        v.payload('["\udc00"]', "input")


def _nested_memo(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def test_a_memo_nested_past_the_limit_is_refused_from_any_way_in() -> None:
    """The services parse a memo and write it again (describe, the visibility row, list
    answers), where orjson stops at 255 levels: a memo of 300 levels was taken, then broke
    each of them (the visibility consumer died)."""
    v.check_command("StartWorkflowExecution", start(memo=_nested_memo(v.MAX_MEMO_DEPTH)))
    assert refused_field("StartWorkflowExecution", start(memo=_nested_memo(v.MAX_MEMO_DEPTH + 1))) == "memo"
    assert refused_field("StartWorkflowExecution", start(memo=_nested_memo(300))) == "memo"
    with pytest.raises(v.Invalid, match="nested at most 100 levels"):
        v.check_command("StartWorkflowExecution", start(memo='{"a":' + "[" * 500 + "]" * 500 + "}"))
