"""Drive the history service through Kafka alone, as a foreign producer would."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer

from kadence_protocol import avro
from services.common import db, kafka
from services.common.colocation import ReplySink
from services.common.config import Settings
from services.history import HistoryService
from services.history.builder import LocalTask
from tests.helpers import eventually

SHARDS = 2


def settings_for(bootstrap: str, dsn: str, **kw: Any) -> Settings:
    return Settings(kafka_bootstrap=bootstrap, database_url=dsn, shards=SHARDS, task_partitions=2,
                    session_timeout_ms=2000, **kw)


class _EveryTask:
    """A task sink taking every task (as matching in this process would its own queues')."""

    def __init__(self, take: Callable[[list[LocalTask]], None]) -> None:
        self._take = take

    def takes(self, namespace: str, task_queue: str) -> bool:
        return True

    def hand_over(self, tasks: Sequence[Any]) -> None:
        self._take(list(tasks))

    def holds(self, task_id: str) -> bool:
        return False  # the test has the tasks, not a matching: re-dispatch treats them as it would lost ones


@asynccontextmanager
async def history_running(
    bootstrap: str, dsn: str, *, local_tasks: Callable[[list[LocalTask]], None] | None = None,
    replies: ReplySink | None = None,
) -> AsyncIterator[HistoryService]:
    """History running; with ``local_tasks``, that takes every task instead of kadence.tasks,
    as matching in the same process would; with ``replies``, that sink of replies and closes."""
    await db.migrate(dsn)
    await kafka.ensure_topics(bootstrap, SHARDS, 2)
    tasks = None if local_tasks is None else _EveryTask(local_tasks)
    service = HistoryService(settings_for(bootstrap, dsn), tasks=tasks, replies=replies)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


class Topics:
    """A producer for kadence.requests and readers of what history publishes."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.producer = kafka.new_producer(bootstrap)
        self.consumer = AIOKafkaConsumer(kafka.TASKS, kafka.REPLIES, kafka.DLQ, bootstrap_servers=bootstrap,
                                         auto_offset_reset="earliest", fetch_max_wait_ms=10)
        self.seen: dict[str, list[tuple[str, dict[str, Any]]]] = {}

    async def __aenter__(self) -> Topics:
        await self.producer.start()
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()
        await self.producer.stop()

    async def send(self, name: str, record: dict[str, Any]) -> None:
        await self.producer.send_and_wait(kafka.REQUESTS, avro.encode(name, record),
                                          key=kafka.workflow_key(record["namespace"], record["workflow_id"]))

    async def send_raw(self, key: bytes, value: bytes) -> None:
        await self.producer.send_and_wait(kafka.REQUESTS, value, key=key)

    async def next(self, topic: str, name: str | None = None, timeout: float = 15.0,
                   **match: Any) -> dict[str, Any]:
        """The first record on ``topic`` (of type ``name``, with fields equal to ``match``) not taken yet."""
        async def find() -> dict[str, Any]:
            while True:
                queue = self.seen.setdefault(topic, [])
                for i, (n, rec) in enumerate(queue):
                    if (name is None or n == name) and all(rec.get(k) == v for k, v in match.items()):
                        del queue[i]
                        return rec
                batches = await self.consumer.getmany(timeout_ms=200)
                for tp, records in batches.items():
                    for r in records:
                        if tp.topic == kafka.DLQ:
                            self.seen.setdefault(tp.topic, []).append(("DeadLetter", avro.decode(r.value)[1]))
                        else:
                            self.seen.setdefault(tp.topic, []).append(avro.decode(r.value))
        return await asyncio.wait_for(find(), timeout)


def start_record(workflow_id: str, **kw: Any) -> dict[str, Any]:
    base = {"namespace": "default", "workflow_id": workflow_id, "workflow_type": "Greet", "task_queue": "q",
            "input": '["world"]', "execution_timeout_ms": 0, "workflow_task_timeout_ms": 10000,
            "request_id": uuid.uuid4().hex, "identity": "test", "reply_to": "tester"}
    base.update(kw)
    return base


def task_ref(task: dict[str, Any]) -> dict[str, Any]:
    return {k: task[k] for k in ("namespace", "workflow_id", "run_id", "scheduled_event_id", "attempt")} | {
        "identity": "test-worker"}


async def until(check: Callable[[], bool | Awaitable[bool]], *, seconds: float = 5.0, every: float = 0.1) -> None:
    """Wait until ``check`` holds (tests/helpers.py ``eventually``); raises when it does not."""
    await eventually(check, timeout=seconds, every=every)


async def history_of(dsn: str, run_id: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT data FROM history_events WHERE run_id = $1 ORDER BY event_id", run_id)
    finally:
        await conn.close()
    return [avro.decode(r["data"])[1] for r in rows]
