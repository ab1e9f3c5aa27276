"""Frontend validation, task tokens and the OpenAPI document; no I/O."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from services.frontend import InvalidArgument, TaskToken, TokenKeys, openapi_document
from services.frontend import validation as v
from services.frontend.handlers import PREFIX

pytestmark = pytest.mark.timeout(60)

PROTOCOL = Path(__file__).resolve().parents[4] / "docs" / "protocol.md"


def field_of(fn, *args, **kwargs) -> str | None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidArgument) as info:
        fn(*args, **kwargs)
    return info.value.field


def test_start_request_accepts_a_good_body_and_ignores_unknown_fields() -> None:
    req = v.start_request("default", {"workflow_id": "w", "workflow_type": "T", "task_queue": "q",
                                      "input": [1, "a"], "execution_timeout_ms": 5, "surprise": True})
    assert req.input == '[1,"a"]'
    assert req.workflow_task_timeout_ms == 10000
    assert req.request_id == ""


@pytest.mark.parametrize(("body", "field"), [
    ({"workflow_type": "T", "task_queue": "q"}, "workflow_id"),
    ({"workflow_id": "", "workflow_type": "T", "task_queue": "q"}, "workflow_id"),
    ({"workflow_id": "x" * 1001, "workflow_type": "T", "task_queue": "q"}, "workflow_id"),
    ({"workflow_id": "w", "workflow_type": 3, "task_queue": "q"}, "workflow_type"),
    ({"workflow_id": "w", "workflow_type": "T"}, "task_queue"),
    ({"workflow_id": "w", "workflow_type": "T", "task_queue": "q", "input": "[1]"}, "input"),
    ({"workflow_id": "w", "workflow_type": "T", "task_queue": "q", "execution_timeout_ms": -1},
     "execution_timeout_ms"),
    ({"workflow_id": "w", "workflow_type": "T", "task_queue": "q", "workflow_task_timeout_ms": 1.5},
     "workflow_task_timeout_ms"),
    ({"workflow_id": "w", "workflow_type": "T", "task_queue": "q", "execution_timeout_ms": True},
     "execution_timeout_ms"),
])
def test_start_request_names_the_bad_field(body: dict[str, object], field: str) -> None:
    assert field_of(v.start_request, "default", body) == field


@pytest.mark.parametrize("ns", ["", "a/b", "x" * 101, "sp ace"])
def test_namespace_pattern(ns: str) -> None:
    assert field_of(v.namespace, ns) == "namespace"
    assert v.namespace("prod.eu-1_x") == "prod.eu-1_x"


def test_malformed_json_body() -> None:
    assert field_of(v.parse_json_body, b"{nope") is None
    assert field_of(v.parse_json_body, b"[1, 2]") is None
    assert v.parse_json_body(b"") == {}


def test_poll_request_limits() -> None:
    assert v.poll_request("default", "q", {}).max_tasks == 1
    assert field_of(v.poll_request, "default", "q", {"max_tasks": 0}) == "max_tasks"
    assert field_of(v.poll_request, "default", "q", {"wait_seconds": -1}) == "wait_seconds"
    assert field_of(v.poll_request, "default", "q", {"wait_seconds": "soon"}) == "wait_seconds"


def test_commands_are_checked_against_the_schema() -> None:
    good = v.commands({"commands": [
        {"command_type": "StartTimer", "attributes": {"timer_id": "t", "start_to_fire_timeout_ms": 5}},
        {"command_type": "CompleteWorkflowExecution", "attributes": {"result": "1"}},
    ]})
    assert [c["command_type"] for c in good] == ["StartTimer", "CompleteWorkflowExecution"]
    assert field_of(v.commands, {"commands": {}}) == "commands"
    assert field_of(v.commands, {"commands": [{"command_type": "Explode", "attributes": {}}]}) == \
        "commands[0].command_type"
    bad = [{"command_type": "StartTimer", "attributes": {"timer_id": "t", "start_to_fire_timeout_ms": 1}},
           {"command_type": "StartTimer", "attributes": {"timer_id": "t", "start_to_fire_timeout_ms": "x"}}]
    assert field_of(v.commands, {"commands": bad}) == "commands[1].attributes.start_to_fire_timeout_ms"
    assert field_of(v.commands, {"commands": [{"command_type": "StartTimer", "attributes": {}}]}) == \
        "commands[0].attributes.timer_id"


# Values a JSON body can hold, at the edges of the Avro types the command attributes use.
_JSON_VALUES: list[object] = [None, True, False, 0, -1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 1.0, 1.5, "", "x", [], {},
                {"message": "m"}, {"message": "m", "type": "T", "non_retryable": False}, "ABANDON", "TERMINATE"]


def test_each_attribute_is_held_to_its_type_as_fastavro_holds_it() -> None:
    """The attribute tests built once per command type (validation._attribute_fields) say
    yes or no exactly as fastavro's validate of the field's type, which ran on every value."""
    from fastavro.validation import validate

    for command_type in v.command_types():
        for f in v._attribute_fields(command_type):
            for value in _JSON_VALUES:
                assert f.fits(value) == validate(value, f.type, raise_errors=False), (command_type, f.name, value)


def test_a_missing_null_or_boolean_attribute_is_named() -> None:
    timer = {"timer_id": "t", "start_to_fire_timeout_ms": 5}
    assert field_of(v.commands, {"commands": [{"command_type": "StartTimer", "attributes": {
        **timer, "timer_id": None}}]}) == "commands[0].attributes.timer_id"
    with pytest.raises(InvalidArgument, match="must be a number"):
        v.commands({"commands": [{"command_type": "StartTimer", "attributes": {**timer, "start_to_fire_timeout_ms": True}}]})
    # An optional attribute given as null takes its default (it is left out).
    cmd, = v.commands({"commands": [{"command_type": "CompleteWorkflowExecution", "attributes": {"result": None}}]})
    assert cmd == {"command_type": "CompleteWorkflowExecution", "attributes": {}}


def test_a_workflow_task_run_ahead_is_checked_like_a_completion() -> None:
    assert v.run_ahead({}) is None and v.run_ahead({"workflow_task": None}) is None
    complete = {"command_type": "CompleteWorkflowExecution", "attributes": {"result": "1"}}
    good = {"after_scheduled_event_id": 2, "after_started_time": 10, "started_time": 12, "commands": [complete],
            "ahead_id": 9, "after_ahead_id": 0}
    assert v.run_ahead({"workflow_task": good}) == good | {"runs_timers_ahead": False}
    assert v.run_ahead({"workflow_task": good | {"runs_timers_ahead": True}})["runs_timers_ahead"] is True
    assert field_of(v.run_ahead, {"workflow_task": {**good, "runs_timers_ahead": 1}}) == "workflow_task.runs_timers_ahead"
    chained = {k: x for k, x in good.items() if k != "after_scheduled_event_id"} | {"after_ahead_id": 4}
    assert v.run_ahead({"workflow_task": chained}) == chained | {"after_scheduled_event_id": 0, "runs_timers_ahead": False}
    assert field_of(v.run_ahead, {"workflow_task": {**good, "ahead_id": 0}}) == "workflow_task.ahead_id"
    assert field_of(v.run_ahead, {"workflow_task": []}) == "workflow_task"
    assert field_of(v.run_ahead, {"workflow_task": {**good, "started_time": -1}}) == "workflow_task.started_time"
    assert field_of(v.run_ahead, {"workflow_task": {**good, "after_started_time": True}}) == \
        "workflow_task.after_started_time"
    missing = {k: x for k, x in good.items() if k != "started_time"}
    assert field_of(v.run_ahead, {"workflow_task": missing}) == "workflow_task.started_time"
    bad = {**good, "commands": [{"command_type": "Explode", "attributes": {}}]}
    assert field_of(v.run_ahead, {"workflow_task": bad}) == "workflow_task.commands[0].command_type"


def test_failure_and_json_text() -> None:
    assert v.failure({"failure": {"message": "m"}}, "failure", required=True) == {
        "message": "m", "type": "", "stack_trace": "", "non_retryable": False, "details": None}
    assert field_of(v.failure, {}, "failure", required=True) == "failure"
    assert field_of(v.failure, {"failure": {"message": 1}}, "failure", required=True) == "failure.message"
    assert field_of(v.json_text, {"result": "{bad"}, "result") == "result"
    assert v.json_text({"result": "[1]"}, "result") == "[1]"


def test_task_token_round_trip_and_rejects() -> None:
    keys = TokenKeys.of(["k" * 32])
    tok = TaskToken("default", "wf/1", "run", 7, 2, "activity", 0, "q")
    text = tok.encode(keys)
    assert re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", text)
    assert TaskToken.decode(text, keys) == tok
    started = TaskToken("default", "wf-é", "run", 2, 1, "workflow", 1_700_000_000_123)
    assert TaskToken.decode(started.encode(keys), keys) == started

    def signed(raw: bytes) -> str:  # well signed, badly formed
        return (base64.urlsafe_b64encode(raw).decode().rstrip("=") + "."
                + base64.urlsafe_b64encode(keys.sign(raw)).decode().rstrip("="))

    for bad in [None, "", "%%%.%%%", signed(b"[1]"), signed(b'{"namespace": "x"}'),
                TaskToken("d", "w", "r", 1, 1, "workflow", "soon").encode(keys),  # type: ignore[arg-type]
                TaskToken("d", "w", "r", 1, 1, "nonsense").encode(keys)]:
        assert field_of(TaskToken.decode, bad, keys) == "task_token"


def test_openapi_lists_every_path_of_the_protocol() -> None:
    doc = openapi_document()
    assert doc["openapi"].startswith("3.1")
    table = re.findall(r"^\| `(GET|POST|PATCH|DELETE) (/[^`]*)`", PROTOCOL.read_text(), flags=re.MULTILINE)
    assert len(table) >= 16
    for method, path in table:
        full = path if path.startswith("/api/") else PREFIX + path  # the namespace routes are written whole
        assert full in doc["paths"], full
        op = doc["paths"][full][method.lower()]
        assert op["responses"] and op["operationId"]
        if method == "POST":
            assert "requestBody" in op
    refs = re.findall(r'"#/components/schemas/(\w+)"', str(doc).replace("'", '"'))
    assert set(refs) <= set(doc["components"]["schemas"])


def test_json_bodies_parse_as_json_parses_them() -> None:
    """Bodies are parsed by orjson where it agrees with json: an integer past 64 bits stays an
    integer (orjson would make it a float), and UTF-16, a BOM, NaN and lone surrogates are still
    taken as json takes them."""
    import json

    from services.frontend.validation import parse_json_body

    for raw in (b'{"input": [123456789012345678901234567890, -9223372036854775809]}', b'{"a": [1, 2.5, "x"]}',
                '{"a": "\u00e9"}'.encode("utf-16"), b'\xef\xbb\xbf{"a": 1}', b'{"a": NaN}', b'{"a": "\\ud800"}',
                b'{"a": 1e400}', b'{"a": [9999999999999999999, -999999999999999999, 1234567890123456789.5]}',
                b'{"a": [-9223372036854775808, -9999999999999999999, 0.1234567890123456789, 1e1234567890123456789]}',
                b'{"a": [12345678901234567890123456789012345678, 1.5e-1234567890123456789, 18446744073709551616]}'):
        parsed = parse_json_body(raw)
        expected = json.loads(raw)
        assert repr(parsed) == repr(expected), raw
    with pytest.raises(InvalidArgument, match="not valid JSON: Expecting value"):
        parse_json_body(b'{"a":')


def test_a_worker_answer_with_a_run_ahead_id_is_parsed_by_orjson() -> None:
    """A 63-bit run-ahead id has 19 digits nine times in ten; every answer batch carrying one
    went to json, three times orjson's cost. orjson reads such an integer exactly: it stays
    on the fast path, while an integer past 64 bits still leaves it (fractions and exponents
    read the same either way: test_json_bodies_parse_as_json_parses_them)."""
    ahead = (1 << 63) - 1
    raw = b'{"answers": [{"body": {"workflow_task": {"ahead_id": %d, "started_time": 1765151111222}}}]}' % ahead
    assert v._fast_loads(raw) == {"answers": [{"body": {"workflow_task": {
        "ahead_id": ahead, "started_time": 1765151111222}}}]}
    assert v._fast_loads(b'{"a": 9999999999999999999, "b": "1234567890123456789"}') is not None
    for inexact in (b'{"a": 18446744073709551616}', b'{"a": -9223372036854775809}',
                    b'{"a": 1, "b": 123456789012345678901234}'):
        assert v._fast_loads(inexact) is None, inexact


def test_a_body_with_a_63_bit_id_is_parsed_by_orjson(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker's answer carries a run-ahead id of 19 digits: within 64 bits, orjson reads it
    exactly, so the body does not fall back to json (several times slower)."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("json parsed a body orjson reads exactly")

    monkeypatch.setattr(v.json, "loads", refuse)
    body = b'{"workflow_task": {"ahead_id": 8789791262479980663, "started_time": 1796688176304}, "n": -9223372036854775808}'
    assert v.parse_json_body(body) == {"workflow_task": {"ahead_id": 8789791262479980663,
                                                         "started_time": 1796688176304}, "n": -(2**63)}


def _nested(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth):
        value = [value]
    return value


def test_a_body_nested_too_deeply_is_refused_not_a_500() -> None:
    """A body nested past what orjson parses fell to json.loads, whose RecursionError was a 500."""
    with pytest.raises(InvalidArgument, match="nested too deeply"):
        v.parse_json_body(b"[" * 100_000 + b"]" * 100_000)


@pytest.mark.parametrize("field", ["input", "memo"])
def test_an_argument_or_memo_nested_too_deeply_is_refused_naming_it(field: str) -> None:
    """orjson parses up to 1024 levels; json re-encoded input and memo and ran out of stack
    (RecursionError, a 500) from about 990."""
    deep: object = _nested(1000) if field == "input" else {"a": _nested(1000)}
    body = {"workflow_id": "w", "workflow_type": "T", "task_queue": "q", field: deep}
    assert field_of(v.start_request, "default", body) == field


def test_an_unknown_command_attribute_or_failure_field_is_refused_naming_it() -> None:
    """Unknown fields are refused everywhere else in a body (docs/protocol.md); in a command's
    attributes, and in a Failure (a Temporal habit: `cause`), they were dropped without a word."""
    timer = {"timer_id": "t", "start_to_fire_timeout_ms": 5}
    assert field_of(v.commands, {"commands": [{"command_type": "StartTimer", "attributes": {
        **timer, "start_to_fire_timeout": 5}}]}) == "commands[0].attributes.start_to_fire_timeout"
    fail = {"command_type": "FailWorkflowExecution",
            "attributes": {"failure": {"message": "m", "cause": {"message": "inner"}}}}
    assert field_of(v.commands, {"commands": [fail]}) == "commands[0].attributes.failure.cause"
    schedule = {"command_type": "ScheduleActivityTask", "attributes": {
        "activity_id": "1", "activity_type": "A", "task_queue": "q", "input": "[]", "schedule_to_close_timeout_ms": 0,
        "schedule_to_start_timeout_ms": 0, "start_to_close_timeout_ms": 1000, "heartbeat_timeout_ms": 0,
        "retry_policy": {"initial_interval_ms": 1000, "backoff_coefficient": 2.0, "maximum_interval_ms": 0,
                         "maximum_attempts": 0, "non_retryable_error_types": [], "max_attempts": 3}}}
    assert field_of(v.commands, {"commands": [schedule]}) == "commands[0].attributes.retry_policy.max_attempts"
    assert field_of(v.failure, {"failure": {"message": "m", "cause": {}}}, "failure", required=True) == "failure.cause"


def test_arguments_and_a_memo_keep_their_characters_and_count_their_utf8_bytes() -> None:
    """Written escaped, 'é' took 6 bytes of the 2 MiB payload limit and '😀' 12: 1 MB of such
    text in a body under the 1 MiB request limit was refused as over 2 MiB."""
    text = "\u00e9\U0001f600" * 200_000  # 1.2 MB in UTF-8, 3.6 MB escaped
    assert v.array_json({"input": [text]}, "input") == f'["{text}"]'
    assert v.memo({"memo": {"k": text}}) == f'{{"k":"{text}"}}'
    # A lone surrogate has no UTF-8 form: written escaped, as it came.
    assert v.array_json({"input": ["\ud800\u00e9"]}, "input") == '["\\ud800\\u00e9"]'
    assert v.memo({"memo": {"k": "\udfff"}}) == '{"k":"\\udfff"}'
    with pytest.raises(InvalidArgument) as refused:  # still over the limit in UTF-8 bytes
        v.array_json({"input": ["\u00e9" * (1024 * 1024 + 1)]}, "input")
    assert refused.value.field == "input"
