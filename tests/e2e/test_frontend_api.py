"""The frontend against a real Tansu broker and a real PostgreSQL (history not running,
except where a test plays its part on the real topics)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer

from kadence_protocol import avro
from services.common import db, kafka
from services.common.config import Settings
from services.common.embedded import EmbeddedBroker
from services.frontend import FrontendService
from services.matching import MatchingService
from tests.helpers import eventually

pytestmark = pytest.mark.timeout(60)

NS = "/api/v1/namespaces/default"


@dataclass
class Env:
    settings: Settings
    frontend: FrontendService
    http: aiohttp.ClientSession
    pool: asyncpg.Pool

    async def call(self, method: str, path: str, body: object = None, **params: str) -> tuple[int, dict]:
        kwargs: dict[str, object] = {"params": params}
        if isinstance(body, bytes | str):
            kwargs["data"] = body
        elif body is not None:
            kwargs["json"] = body
        async with self.http.request(method, self.frontend.url + path, **kwargs) as resp:  # type: ignore[arg-type]
            return resp.status, await resp.json()


@pytest.fixture
async def env(broker: EmbeddedBroker, fresh_dsn: str) -> AsyncIterator[Env]:
    await db.migrate(fresh_dsn)
    await kafka.ensure_topics(broker.bootstrap, 4, 4)
    settings = Settings(kafka_bootstrap=broker.bootstrap, database_url=fresh_dsn, frontend_port=0,
                        session_timeout_ms=2000, instance_id=f"fe-{uuid.uuid4().hex[:6]}",
                        health_unanswered_ms=500)
    pool = await db.create_pool(fresh_dsn)
    frontend = FrontendService(settings, pool=pool)
    await frontend.start()
    http = aiohttp.ClientSession()
    try:
        yield Env(settings, frontend, http, pool)
    finally:
        await http.close()
        await frontend.stop()
        await pool.close()


async def test_invalid_requests_name_the_field(env: Env) -> None:
    status, body = await env.call("POST", f"{NS}/workflows", {"workflow_type": "T", "task_queue": "q"})
    assert (status, body["error"], body["field"]) == (400, "InvalidArgument", "workflow_id")
    status, body = await env.call("POST", f"{NS}/workflows",
                                  {"workflow_id": "w", "workflow_type": "T", "task_queue": "q", "input": {}})
    assert (status, body["field"]) == (400, "input")
    status, body = await env.call("POST", f"{NS}/workflows",
                                  {"workflow_id": "w", "workflow_type": "T", "task_queue": "q", "wait_seconds": -1})
    assert (status, body["field"]) == (400, "wait_seconds")
    status, body = await env.call("POST", "/api/v1/namespaces/bad%20ns/workflows", {"workflow_id": "w"})
    assert (status, body["field"]) == (400, "namespace")
    status, body = await env.call("POST", f"{NS}/workflows", b"{not json")
    assert (status, body["error"]) == (400, "InvalidArgument")
    status, body = await env.call("POST", f"{NS}/workflow-tasks/complete", {"task_token": "@@@"})
    assert (status, body["field"]) == (400, "task_token")
    status, body = await env.call("POST", f"{NS}/workflows/w/signal", {"signal_name": ""})
    assert (status, body["field"]) == (400, "signal_name")
    status, body = await env.call("GET", f"{NS}/workflows/w/history", page_size="0")
    assert (status, body["field"]) == (400, "page_size")
    status, body = await env.call("GET", "/no/such/path")
    assert status == 404 and "error" in body


async def test_openapi_and_health(env: Env) -> None:
    status, doc = await env.call("GET", "/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.1")
    assert f"{NS.replace('default', '{namespace}')}/workflows" in doc["paths"]
    status, health = await env.call("GET", "/health")
    assert (status, health["status"], health["replies"]["status"]) == (200, "ok", "ok")  # nothing waits yet


async def test_health_is_degraded_while_no_history_answers(env: Env) -> None:
    """No history process is up: a start waits (until 503 Unavailable); /health says so
    instead of ok, and stays 200 (the frontend itself serves), after the fixture's
    health_unanswered_ms."""
    start = asyncio.ensure_future(env.call("POST", f"{NS}/workflows", {
        "workflow_id": "unanswered", "workflow_type": "W", "task_queue": "q", "request_id": "r-unanswered"}))
    try:
        async def degraded() -> dict[str, Any]:
            status, health = await env.call("GET", "/health")
            assert status == 200 and health["status"] == "degraded", health
            return dict(health["replies"])
        seen: dict[str, Any] = await eventually(degraded, what="/health degraded")
        assert seen["waiting"] >= 1 and seen["oldest_waiting_ms"] >= 500 and seen["last_reply_ms_ago"] is None
    finally:
        start.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await start


async def test_unknown_workflow_is_404(env: Env) -> None:
    for path in ("", "/history", "/result"):
        status, body = await env.call("GET", f"{NS}/workflows/nobody{path}")
        assert (status, body["error"]) == (404, "WorkflowNotFound"), path


async def test_empty_poll_returns_within_its_wait(env: Env) -> None:
    started = time.monotonic()
    status, body = await env.call("POST", f"{NS}/task-queues/q/workflow-tasks/poll", {"wait_seconds": 1})
    assert (status, body) == (200, {"tasks": []})
    assert time.monotonic() - started < 5
    status, body = await env.call("POST", f"{NS}/task-queues/q/activity-tasks/poll", {"wait_seconds": 0.5})
    assert (status, body) == (200, {"tasks": []})


async def _requests_consumer(bootstrap: str) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(kafka.REQUESTS, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                fetch_max_wait_ms=10)
    await consumer.start()
    return consumer


async def test_start_waits_for_the_reply_of_history(env: Env) -> None:
    """Play history on the real topics: read the command, answer with a Reply."""
    consumer = await _requests_consumer(env.settings.kafka_bootstrap)
    producer = kafka.new_producer(env.settings.kafka_bootstrap)
    await producer.start()

    async def fake_history() -> None:
        seen: set[str] = set()
        while True:
            for records in (await consumer.getmany(timeout_ms=100)).values():
                for rec in records:
                    name, cmd = avro.decode(rec.value)
                    assert name == "StartWorkflowExecution"
                    dup = cmd["workflow_id"] in seen
                    seen.add(cmd["workflow_id"])
                    reply = {"reply_to": cmd["reply_to"], "request_id": cmd["request_id"], "ok": not dup,
                             "run_id": "run-1", "error_type": "WorkflowAlreadyStarted" if dup else None,
                             "error_message": "already running" if dup else None}
                    await producer.send_and_wait(kafka.REPLIES, avro.encode("Reply", reply),
                                                 key=cmd["reply_to"].encode())

    task = asyncio.create_task(fake_history())
    try:
        start = {"workflow_id": "w1", "workflow_type": "T", "task_queue": "q", "input": [1]}
        assert await env.call("POST", f"{NS}/workflows", start) == (201, {"run_id": "run-1", "workflow_id": "w1"})
        status, body = await env.call("POST", f"{NS}/workflows", start)
        assert (status, body["error"], body["run_id"]) == (409, "WorkflowAlreadyStarted", "run-1")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await producer.stop()
        await consumer.stop()


async def test_workflow_task_poll_records_start_and_returns_events(env: Env, fresh_dsn: str) -> None:
    matching = MatchingService(env.settings, pool=env.pool)
    await matching.start()
    producer = kafka.new_producer(env.settings.kafka_bootstrap)
    await producer.start()
    consumer = await _requests_consumer(env.settings.kafka_bootstrap)
    try:
        await eventually(lambda: len(matching.owned_partitions) == env.settings.task_partitions, timeout=15,
                         what="every task partition owned")
        for event_id, etype, attrs in [
            (1, "WorkflowExecutionStarted", {"workflow_type": "T", "task_queue": "q", "input": "[1]"}),
            (2, "WorkflowTaskScheduled", {"task_queue": "q", "start_to_close_timeout_ms": 10000, "attempt": 1}),
        ]:
            event = {"event_id": event_id, "event_time": 1, "event_type": etype, "attributes": attrs}
            try:
                data = avro.encode("HistoryEvent", event)
            except (ValueError, TypeError, KeyError):
                data = avro.encode("HistoryEvent", {**event, "attributes": None})
            await env.pool.execute("INSERT INTO history_events (run_id, event_id, data) VALUES ($1, $2, $3)",
                                   "run-1", event_id, data)
        task = {"namespace": "default", "workflow_id": "w1", "run_id": "run-1", "task_id": "t1",
                "task_queue": "q", "workflow_type": "T", "scheduled_event_id": 2, "attempt": 1,
                "first_event_id": 1, "scheduled_time": 1}
        await producer.send_and_wait(kafka.TASKS, avro.encode("WorkflowTask", task),
                                     key=kafka.task_queue_key("default", "q"))
        status, body = await env.call("POST", f"{NS}/task-queues/q/workflow-tasks/poll",
                                      {"wait_seconds": 10, "identity": "me"})
        assert status == 200 and len(body["tasks"]) == 1
        got = body["tasks"][0]
        assert [e["event_id"] for e in got["events"]] == [1, 2]
        assert (got["workflow_id"], got["scheduled_event_id"], got["attempt"]) == ("w1", 2, 1)
        records = [avro.decode(r.value) for rs in (await consumer.getmany(timeout_ms=3000)).values() for r in rs]
        # The started record names the started time the worker was given (its workflow.now()).
        assert ("RecordWorkflowTaskStarted", {"namespace": "default", "workflow_id": "w1", "run_id": "run-1",
                                              "scheduled_event_id": 2, "attempt": 1, "identity": "me",
                                              "started_time": got["started_time"]}) in records
        assert abs(got["started_time"] - time.time() * 1000) < 60_000
        complete = {"task_token": got["task_token"], "commands": [
            {"command_type": "CompleteWorkflowExecution", "attributes": {"result": json.dumps("done")}}]}
        assert await env.call("POST", f"{NS}/workflow-tasks/complete", complete) == (200, {})
        bad = {"task_token": got["task_token"], "commands": [{"command_type": "StartTimer", "attributes": {}}]}
        status, body = await env.call("POST", f"{NS}/workflow-tasks/complete", bad)
        assert (status, body["field"]) == (400, "commands[0].attributes.timer_id")

        # Several answers in one call: each gets the answer it would get alone.
        await consumer.getmany(timeout_ms=500)
        status, body = await env.call("POST", f"{NS}/task-answers", {"answers": [
            {"operation": "complete_workflow_task", "body": complete},
            {"operation": "complete_workflow_task", "body": bad},
            {"operation": "start", "body": {}},
        ]})
        assert status == 200
        assert [r["status"] for r in body["results"]] == [200, 400, 400]
        assert body["results"][1]["field"] == "commands[0].attributes.timer_id"
        assert body["results"][2]["field"] == "answers[2].operation"
        records = [avro.decode(r.value) for rs in (await consumer.getmany(timeout_ms=3000)).values() for r in rs]
        assert [name for name, _ in records] == ["RespondWorkflowTaskCompleted"]
        status, body = await env.call("POST", f"{NS}/task-answers", {"answers": []})
        assert (status, body["field"]) == (400, "answers")
    finally:
        await consumer.stop()
        await producer.stop()
        await matching.stop()
