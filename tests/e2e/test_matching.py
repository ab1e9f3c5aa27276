"""Matching against a real Tansu broker and a real PostgreSQL: sync match, backlog,
empty polls, duplicate collapse and the dead-letter path."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from kadence_protocol import avro
from services.common import db, kafka
from services.common.config import Settings
from services.common.embedded import EmbeddedBroker
from services.common.matching import WORKFLOW, MatchingClient, QueryScope, UnknownQueryError
from services.common.matching.tasks import MatchedTask
from services.history.builder import LocalTask
from services.matching import MatchingService
from services.matching import service as matching_service
from services.matching.queues import QueueKey, RecentTasks
from tests.helpers import eventually, stays

pytestmark = pytest.mark.timeout(60)

PARTITIONS = 4


@dataclass
class Env:
    settings: Settings
    service: MatchingService
    client: MatchingClient
    pool: asyncpg.Pool
    producer: object


@pytest.fixture
async def env(broker: EmbeddedBroker, fresh_dsn: str) -> AsyncIterator[Env]:
    await db.migrate(fresh_dsn)
    await kafka.ensure_topics(broker.bootstrap, 4, PARTITIONS)
    settings = Settings(kafka_bootstrap=broker.bootstrap, database_url=fresh_dsn, task_partitions=PARTITIONS,
                        session_timeout_ms=2000, instance_id=f"m-{uuid.uuid4().hex[:6]}")
    pool = await db.create_pool(fresh_dsn)
    service = MatchingService(settings, pool=pool)
    await service.start()
    producer = kafka.new_producer(broker.bootstrap)
    await producer.start()
    client = MatchingClient(pool, PARTITIONS, local=service)
    try:
        await eventually(lambda: len(service.owned_partitions) == PARTITIONS, timeout=15,
                         what="every task partition owned")
        yield Env(settings, service, client, pool, producer)
    finally:
        await client.close()
        await producer.stop()
        await service.stop()
        await pool.close()


def workflow_task(tq: str, task_id: str | None = None, ns: str = "default") -> tuple[bytes, bytes, str]:
    task_id = task_id or uuid.uuid4().hex
    value = avro.encode("WorkflowTask", {
        "namespace": ns, "workflow_id": "wf-1", "run_id": "run-1", "task_id": task_id, "task_queue": tq,
        "workflow_type": "Greet", "scheduled_event_id": 2, "attempt": 1, "first_event_id": 1,
        "scheduled_time": 1,
    })
    return kafka.task_queue_key(ns, tq), value, task_id


def poll_waiting(service: MatchingService, tq: str, ns: str = "default") -> bool:
    """A poll on the workflow queue ``tq`` is parked, waiting for a task."""
    q = service._queues.get(QueueKey(ns, tq, WORKFLOW))
    return q is not None and q.has_pollers()


async def backlog_count(env: Env, where: str = "TRUE", *args: object) -> int:
    return int(await env.pool.fetchval(f"SELECT count(*) FROM task_backlog WHERE {where}", *args))


async def produce(env: Env, key: bytes, value: bytes) -> tuple[int, int]:
    """Publish a task; its (partition, offset)."""
    md = await env.producer.send_and_wait(kafka.TASKS, value, key=key)  # type: ignore[attr-defined]
    return md.partition, md.offset


async def consumed(env: Env, at: tuple[int, int]) -> bool:
    """Matching's consumer has ingested and committed the record at ``at``."""
    assert env.service._consumer is not None
    committed = await env.service._consumer._consumer.committed(TopicPartition(kafka.TASKS, at[0]))
    return committed is not None and committed > at[1]


async def test_sync_match_when_poll_waits_first(env: Env) -> None:
    key, value, task_id = workflow_task("tq-sync")
    poll = asyncio.create_task(env.client.poll("default", "tq-sync", WORKFLOW, 1, 10.0, "w1"))
    await eventually(lambda: poll_waiting(env.service, "tq-sync"), what="the poll waiting")
    await produce(env, key, value)
    tasks = await asyncio.wait_for(poll, 10)
    assert [t.task_id for t in tasks] == [task_id]
    assert tasks[0].task["workflow_type"] == "Greet"
    assert await env.pool.fetchval("SELECT count(*) FROM task_backlog") == 0


async def test_backlog_survives_until_a_later_poll(env: Env) -> None:
    ids = []
    for _ in range(3):
        key, value, task_id = workflow_task("tq-backlog")
        await produce(env, key, value)
        ids.append(task_id)
    await eventually(lambda: backlog_count(env), what="three tasks in the backlog")
    assert await backlog_count(env) == 3
    first = await env.client.poll("default", "tq-backlog", WORKFLOW, 2, 1.0)
    rest = await env.client.poll("default", "tq-backlog", WORKFLOW, 5, 1.0)
    assert [t.task_id for t in first] == ids[:2]
    assert [t.task_id for t in rest] == ids[2:]
    assert await env.pool.fetchval("SELECT count(*) FROM task_backlog") == 0


async def test_empty_poll_returns_within_its_wait(env: Env) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await env.client.poll("default", "tq-empty", WORKFLOW, 1, 0.5) == []
    assert 0.4 <= loop.time() - started < 3.0


async def test_duplicate_task_id_is_delivered_once(env: Env) -> None:
    key, value, task_id = workflow_task("tq-dup")
    await produce(env, key, value)
    await produce(env, key, value)
    got = await env.client.poll("default", "tq-dup", WORKFLOW, 5, 3.0)
    assert [t.task_id for t in got] == [task_id]

    async def no_second_copy() -> bool:
        return await env.client.poll("default", "tq-dup", WORKFLOW, 5, 0.1) == []
    await stays(no_second_copy, for_seconds=1.0, what="no second copy delivered")
    # a re-publication after delivery is dropped as well
    await produce(env, key, value)
    assert await env.client.poll("default", "tq-dup", WORKFLOW, 5, 1.0) == []


async def test_tasks_handed_over_in_process_go_to_polls_or_wait_in_memory(env: Env) -> None:
    # A short "recently delivered" window, so that a re-dispatch later on is delivered.
    env.service._recent = RecentTasks(window_seconds=0.2)
    assert env.service.takes("default", "tq-hand")
    key, value, task_id = workflow_task("tq-hand")
    poll = asyncio.create_task(env.client.poll("default", "tq-hand", WORKFLOW, 1, 10.0, "w1"))
    await eventually(lambda: poll_waiting(env.service, "tq-hand"), what="the poll waiting")
    env.service.hand_over([LocalTask("WorkflowTask", avro.decode(value)[1])])
    assert [t.task_id for t in await asyncio.wait_for(poll, 5)] == [task_id]
    await eventually(lambda: task_id not in env.service._recent, what="the delivered window passed")
    await produce(env, key, value)  # history's re-dispatch of a task nobody started is delivered
    assert [t.task_id for t in await env.client.poll("default", "tq-hand", WORKFLOW, 5, 5.0)] == [task_id]

    # With nobody waiting, the tasks wait in memory for the next polls, which take as many
    # as they ask for; a re-dispatched copy of one still waiting is dropped; nothing goes
    # to the backlog.
    handed = [workflow_task("tq-hand") for _ in range(3)]
    env.service.hand_over([LocalTask("WorkflowTask", avro.decode(value)[1]) for _, value, _ in handed])
    copy = await produce(env, *handed[2][:2])
    await eventually(lambda: consumed(env, copy), what="the re-dispatched copy consumed")
    got = await env.client.poll("default", "tq-hand", WORKFLOW, 2, 5.0)
    got += await env.client.poll("default", "tq-hand", WORKFLOW, 5, 5.0)
    assert [t.task_id for t in got] == [task_id for _, _, task_id in handed]
    assert await env.client.poll("default", "tq-hand", WORKFLOW, 5, 0.5) == []
    assert await env.pool.fetchval("SELECT count(*) FROM task_backlog WHERE task_queue = 'tq-hand'") == 0


async def test_handed_over_tasks_beyond_what_memory_holds_wait_in_the_backlog(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(matching_service, "READY_MAX", 2)
    handed = [workflow_task("tq-overflow") for _ in range(5)]
    env.service.hand_over([LocalTask("WorkflowTask", avro.decode(value)[1]) for _, value, _ in handed])
    await eventually(lambda: backlog_count(env, "task_queue = 'tq-overflow'"), what="the overflow stored")
    got = []
    for _ in range(5):
        got += await env.client.poll("default", "tq-overflow", WORKFLOW, 5, 1.0)
    assert sorted(t.task_id for t in got) == sorted(task_id for _, _, task_id in handed)
    assert await env.pool.fetchval("SELECT count(*) FROM task_backlog WHERE task_queue = 'tq-overflow'") == 0


async def test_a_handed_over_task_whose_poll_went_away_is_kept_in_the_backlog(env: Env) -> None:
    _, value, task_id = workflow_task("tq-putback")
    env.service.put_back([MatchedTask(WORKFLOW, task_id, avro.decode(value)[1])])  # encoded only now
    await eventually(lambda: backlog_count(env, "task_id = $1", task_id), what="the task put back")
    got = await env.client.poll("default", "tq-putback", WORKFLOW, 5, 5.0)
    assert [t.task_id for t in got] == [task_id] and got[0].task == avro.decode(value)[1]


async def test_garbage_goes_to_the_dlq_and_tasks_keep_flowing(env: Env) -> None:
    key, value, task_id = workflow_task("tq-dlq")
    await produce(env, key, b"\x00 definitely not avro")
    await produce(env, key, value)
    got = await env.client.poll("default", "tq-dlq", WORKFLOW, 1, 10.0)
    assert [t.task_id for t in got] == [task_id]
    consumer = AIOKafkaConsumer(kafka.DLQ, bootstrap_servers=env.settings.kafka_bootstrap,
                                auto_offset_reset="earliest", fetch_max_wait_ms=10)
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=5000)
        letters = [avro.decode(r.value) for rs in batch.values() for r in rs]
    finally:
        await consumer.stop()
    assert letters and letters[0][0] == "DeadLetter"
    assert letters[0][1]["source_topic"] == kafka.TASKS
    assert "decode" in letters[0][1]["reason"]


async def test_remote_poll_through_the_internal_api(env: Env) -> None:
    remote = MatchingClient(env.pool, PARTITIONS)  # no local service: goes over HTTP
    try:
        key, value, task_id = workflow_task("tq-remote")
        poll = asyncio.create_task(remote.poll("default", "tq-remote", WORKFLOW, 1, 10.0))
        await eventually(lambda: poll_waiting(env.service, "tq-remote"), what="the remote poll waiting")
        await produce(env, key, value)
        tasks = await asyncio.wait_for(poll, 10)
        assert [t.task_id for t in tasks] == [task_id]
    finally:
        await remote.close()


async def test_query_round_trip(env: Env) -> None:
    client = MatchingClient(env.pool, PARTITIONS)
    try:
        query = asyncio.create_task(client.query("default", "tq-q", "wf-1", "run-1", "status", "[1]", 10.0))
        tasks = await env.client.poll("default", "tq-q", WORKFLOW, 1, 5.0)
        assert len(tasks) == 1 and tasks[0].kind == "query"
        assert tasks[0].task["args"] == [1]
        await client.respond_query(tasks[0].task_id, '"ok"')
        assert await asyncio.wait_for(query, 10) == '"ok"'
    finally:
        await client.close()


async def test_update_requests_of_a_commit_go_only_to_the_poll_handed_the_task_then(env: Env) -> None:
    """A workflow task history hands straight to a waiting poll carries the update requests
    of its commit (the frontend then reads none); one that waits in memory, or is put back,
    does not: whoever takes it later reads the requests of then."""
    waiting = [{"update_id": "u1", "name": "add", "input": "[1]"}]
    _, value, task_id = workflow_task("tq-updates")
    poll = asyncio.create_task(env.client.poll("default", "tq-updates", WORKFLOW, 1, 10.0, "w1"))
    await eventually(lambda: poll_waiting(env.service, "tq-updates"), what="the poll waiting")
    env.service.hand_over([LocalTask("WorkflowTask", avro.decode(value)[1], updates=waiting)])
    got = await asyncio.wait_for(poll, 5)
    assert [t.task_id for t in got] == [task_id] and got[0].updates == waiting

    _, value, task_id = workflow_task("tq-updates")
    env.service.hand_over([LocalTask("WorkflowTask", avro.decode(value)[1], updates=waiting)])  # nobody waits
    got = await env.client.poll("default", "tq-updates", WORKFLOW, 1, 5.0)
    assert [t.task_id for t in got] == [task_id] and got[0].updates is None

    poll = asyncio.create_task(env.client.poll("default", "tq-updates", WORKFLOW, 1, 10.0, "w2"))
    await eventually(lambda: poll_waiting(env.service, "tq-updates"), what="the poll waiting")
    env.service.put_back([MatchedTask(WORKFLOW, "put-back", avro.decode(value)[1], updates=waiting)])
    got = await asyncio.wait_for(poll, 5)
    assert [t.task_id for t in got] == ["put-back"] and got[0].updates is None


async def _dead_letters(bootstrap: str) -> list[dict[str, Any]]:
    """The dead letters on the broker (one fetch from the start)."""
    consumer = AIOKafkaConsumer(kafka.DLQ, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                fetch_max_wait_ms=10)
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=5000)
        return [avro.decode(r.value)[1] for rs in batch.values() for r in rs]
    finally:
        await consumer.stop()


async def test_a_task_record_the_client_cannot_unpack_is_dead_lettered_and_tasks_keep_flowing(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """A record of kadence.tasks with a header key that is not UTF-8 killed the consumer (the
    matching service declared itself fatal), and again on every restart."""
    from .raw_records import UNREADABLE, raw_producer

    key, before, before_id = workflow_task("tq-unreadable")
    _, odd, _ = workflow_task("tq-unreadable")
    _, after, after_id = workflow_task("tq-unreadable")
    async with raw_producer(env.settings.kafka_bootstrap, monkeypatch) as raw:
        await raw.send_and_wait(kafka.TASKS, before, key=key)
        bad = await raw.send_and_wait(kafka.TASKS, odd, key=key, headers=UNREADABLE)
        await raw.send_and_wait(kafka.TASKS, after, key=key)
    await eventually(lambda: consumed(env, (bad.partition, bad.offset + 1)), timeout=15,
                     what="the record after the unreadable one committed")
    got = await env.client.poll("default", "tq-unreadable", WORKFLOW, 5, 1.0)
    assert [t.task_id for t in got] == [before_id, after_id]
    assert not env.service.fatal.happened.is_set(), env.service.fatal.reason
    letters = await _dead_letters(env.settings.kafka_bootstrap)
    assert [(d["source_topic"], d["partition"], d["offset"]) for d in letters] == \
        [(kafka.TASKS, bad.partition, bad.offset)]
    assert f"{kafka.TASKS}[{bad.partition}]@{bad.offset}: the Kafka client cannot unpack it" in letters[0]["reason"]


async def test_an_unreadable_task_record_is_dead_lettered_even_when_the_first_send_fails(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """The isolation went on past the record when its dead letter could not be sent (the broker
    failing a moment): the record was skipped with no dead letter, and committed past."""
    from aiokafka.errors import KafkaConnectionError

    from services.common import kafka as kafka_module
    from services.matching import consumer as task_consumer

    from .raw_records import UNREADABLE, raw_producer

    real, failures = kafka_module.send_dead_letters, [KafkaConnectionError("the broker went away")]

    async def failing_once(producer: object, letters: list[tuple[bytes | None, bytes]]) -> None:
        if failures:
            raise failures.pop()
        await real(producer, letters)
    monkeypatch.setattr(task_consumer, "send_dead_letters", failing_once)

    key, _, _ = workflow_task("tq-unreadable-retry")
    _, odd, _ = workflow_task("tq-unreadable-retry")
    _, after, after_id = workflow_task("tq-unreadable-retry")
    async with raw_producer(env.settings.kafka_bootstrap, monkeypatch) as raw:
        bad = await raw.send_and_wait(kafka.TASKS, odd, key=key, headers=UNREADABLE)
        await raw.send_and_wait(kafka.TASKS, after, key=key)
    await eventually(lambda: consumed(env, (bad.partition, bad.offset + 1)), timeout=15,
                     what="the record after the unreadable one committed")
    assert not failures  # the failure did happen
    got = await env.client.poll("default", "tq-unreadable-retry", WORKFLOW, 5, 1.0)
    assert [t.task_id for t in got] == [after_id]
    letters = await _dead_letters(env.settings.kafka_bootstrap)
    assert [(d["source_topic"], d["partition"], d["offset"]) for d in letters] == \
        [(kafka.TASKS, bad.partition, bad.offset)]


async def test_a_query_takes_an_answer_only_from_its_namespace_and_queue(env: Env) -> None:
    """Over the internal API (no local service): an answer whose scope is another namespace,
    or a queue its sender may not poll, is an unknown query; the query still takes the right one."""
    client = MatchingClient(env.pool, PARTITIONS)
    try:
        query = asyncio.create_task(client.query("default", "tq-scoped", "wf-1", "run-1", "status", None, 10.0))
        tasks = await env.client.poll("default", "tq-scoped", WORKFLOW, 1, 5.0)
        query_id = tasks[0].task_id
        for scope in (QueryScope("other"), QueryScope("default", frozenset({"tq-other"}))):
            with pytest.raises(UnknownQueryError):
                await client.respond_query(query_id, '"forged"', scope=scope)
        assert not query.done()
        await client.respond_query(query_id, '"ok"', scope=QueryScope("default", frozenset({"tq-scoped"})))
        assert await asyncio.wait_for(query, 10) == '"ok"'
    finally:
        await client.close()
