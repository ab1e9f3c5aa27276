"""Each route's body is declared once, in the OpenAPI document, and that declaration is what
the server enforces (services/frontend/openapi.py, schema_check.py, app.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.common.namespaces import parse_duration_ms
from services.common.validation import MAX_DURATION_MS
from services.frontend.admin import ADMIN_ROUTES
from services.frontend.app import build_app
from services.frontend.engine import Engine
from services.frontend.errors import InvalidArgument
from services.frontend.handlers import PREFIX, ROUTES, Handlers
from services.frontend.openapi import _OPS, COMPONENTS, document, request_schema
from services.frontend.schema_check import check, unsupported
from services.frontend.task_queues import TASK_QUEUE_ROUTES

ALL_ROUTES = [(m, PREFIX + p, o) for m, p, o in ROUTES] + ADMIN_ROUTES + TASK_QUEUE_ROUTES
NS = "/api/v1/namespaces/default"


def test_every_route_has_its_schema() -> None:
    """A route added without a schema fails here: a body route needs a body schema, the
    others none (their input is the path and the query string)."""
    for method, path, op in ALL_ROUTES:
        assert op in _OPS, f"{method} {path}: no entry in openapi._OPS"
        schema = request_schema(op)
        if method in ("POST", "PATCH"):
            assert schema is not None, f"{op} takes a body but declares no schema"
            assert schema.get("additionalProperties") is False, f"{op}: unknown fields must be refused"
        else:
            assert schema is None, f"{op} ({method}) declares a body it never reads"
    assert {op for _, _, op in ALL_ROUTES} == set(_OPS), "an _OPS entry with no route"
    served = {(m.lower(), p) for m, p, _ in ALL_ROUTES}
    assert served == {(m, p) for p, ops in document()["paths"].items() for m in ops if p != "/health"}


def test_schemas_use_only_what_the_checker_enforces() -> None:
    for _, _, op in ALL_ROUTES:
        assert list(unsupported(request_schema(op))) == [], op
    for name, schema in COMPONENTS.items():
        assert list(unsupported(schema)) == [], name


def test_command_types_are_the_avro_schemas() -> None:
    """A hand-written list lagged behind the Avro schema and refused newer commands."""
    from kadence_protocol import avro

    field = next(f for f in avro.schemas().current["kadence.Command"]["fields"] if f["name"] == "command_type")
    assert COMPONENTS["Command"]["properties"]["command_type"]["enum"] == field["type"]["symbols"]
    assert len(field["type"]["symbols"]) > 7


def _refused(op: str, body: Any) -> str | None:
    schema = request_schema(op)
    assert schema is not None
    with pytest.raises(InvalidArgument) as info:
        check(schema, body, COMPONENTS)
    return info.value.field


def test_the_checker_names_the_field() -> None:
    start = {"workflow_id": "w", "workflow_type": "T", "task_queue": "q"}
    check(request_schema("start") or {}, start, COMPONENTS)
    # An optional field may be null (the SDK sends run_id: null); it reads as absent.
    check(request_schema("signal") or {}, {"signal_name": "s", "run_id": None}, COMPONENTS)
    assert _refused("start", {**start, "surprise": 1}) == "surprise"
    assert _refused("start", {"workflow_type": "T", "task_queue": "q"}) == "workflow_id"
    assert _refused("start", {**start, "workflow_id": ""}) == "workflow_id"
    assert _refused("start", {**start, "input": {}}) == "input"
    assert _refused("start", {**start, "execution_timeout_ms": True}) == "execution_timeout_ms"
    assert _refused("start", {**start, "execution_timeout_ms": -1}) == "execution_timeout_ms"
    assert _refused("start", {**start, "wait_seconds": 601}) == "wait_seconds"
    assert _refused("signal", {"signal_name": "s", "run_id": "r" * 1001}) == "run_id"
    assert _refused("fail_activity_task", {"task_token": "t", "failure": {"message": 3}}) == "failure.message"
    assert _refused("create_namespace", {"name": "bad ns", "retention": "1d"}) == "name"
    assert _refused("create_schedule", {"schedule_id": "s", "spec": {"cron": "* * * * *", "every": 1},
                                        "action": {"workflow_type": "T", "task_queue": "q"}}) == "spec.every"
    assert _refused("trigger_schedule", {"now": True}) == "now"


def test_an_enum_with_an_empty_default_is_said_in_words() -> None:
    start = {"workflow_id": "w", "workflow_type": "T", "task_queue": "q", "id_reuse_policy": "BOGUS"}
    with pytest.raises(InvalidArgument) as info:
        check(request_schema("start") or {}, start, COMPONENTS)
    message = str(info.value)
    assert "one of AllowDuplicate, " in message and "(or empty for the default)" in message
    assert "of , " not in message and "None" not in message


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    # No engine: every call below is refused before one would be needed.
    app = build_app(Handlers(cast(Engine, None)))
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


async def test_unknown_fields_are_refused_naming_them(client: TestClient[Any, Any]) -> None:
    resp = await client.post(f"{NS}/workflows/w/terminate", json={"reason": "r", "resaon": "typo"})
    body = await resp.json()
    assert (resp.status, body["error"], body["field"]) == (400, "InvalidArgument", "resaon")


async def test_wrong_method_is_405_with_allow(client: TestClient[Any, Any]) -> None:
    resp = await client.delete(f"{NS}/workflows/w/signal")
    assert resp.status == 405
    assert "POST" in resp.headers["Allow"]
    assert (await resp.json())["error"] == "MethodNotAllowed"
    resp = await client.post(f"{NS}/workflows/w")
    assert resp.status == 405 and "GET" in resp.headers["Allow"]


@pytest.mark.parametrize("raw", [b"[]", b'"answers"', b"3", b'{"answers": "x"}', b'{"answers": {}}',
                                 b'{"answers": []}', b'{"answers": [{}], "more": 2}', b'{"answers": ["x"]}',
                                 b'{"answers": [{"operation": ["complete_workflow_task"], "body": {}}]}',
                                 b'{"answers": [{"operation": {}, "body": {}}]}',
                                 b'{"answers": [{"operation": "complete_workflow_task", "body": []}]}'])
async def test_task_answers_odd_bodies_are_400(client: TestClient[Any, Any], raw: bytes) -> None:
    resp = await client.post(f"{NS}/task-answers", data=raw, headers={"Content-Type": "application/json"})
    assert resp.status == 400, await resp.text()
    assert (await resp.json())["error"] == "InvalidArgument"


async def test_task_answers_odd_items_get_their_own_400(client: TestClient[Any, Any]) -> None:
    """Well-formed items the operation refuses get a 400 in their result, as alone they would."""
    answers: list[Any] = [
        {}, {"operation": "start", "body": {}}, {"operation": "nope", "body": {}},
        {"operation": "complete_workflow_task"}, {"operation": "cancel_activity_task", "body": {}, "x": 1},
        {"operation": "cancel_activity_task", "body": {"task_token": "t", "detials": "1"}},
    ]
    resp = await client.post(f"{NS}/task-answers", json={"answers": answers})
    assert resp.status == 200, await resp.text()
    results = (await resp.json())["results"]
    assert [r["status"] for r in results] == [400] * len(answers)
    assert [r["field"] for r in results] == [
        "answers[0].operation", "answers[1].operation", "answers[2].operation", "answers[3].body", "answers[4].x",
        "detials"]


def test_durations_are_bounded() -> None:
    """Found by the fuzzer: a retention of 520572936504998656 days overflowed bigint (500)."""
    assert parse_duration_ms(f"{MAX_DURATION_MS}ms") == MAX_DURATION_MS
    for huge in (520572936504998656, "520572936504998656d", f"{MAX_DURATION_MS + 1}ms"):
        with pytest.raises(ValueError, match="at most"):
            parse_duration_ms(huge)
