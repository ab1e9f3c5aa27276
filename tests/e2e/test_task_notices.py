"""Task notices (services/history/notices.py, services/common/matching/notices.py): history
tells matching in another process of the tasks it published, and a waiting poll gets its
task without waiting for matching's fetch. Only a hint: the fetched copy is then dropped,
a notice the consumer has overtaken is ignored, and with notices lost or off every
workflow still completes through the fetch."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from kadence import Client, Worker
from services.cluster import Cluster
from services.common import kafka
from services.common.config import Settings
from services.common.embedded import EmbeddedBroker
from services.common.fetch_waits import NOTICED_WAITS_MS, SEPARATE_WAITS_MS, Consumer
from services.common.matching import WORKFLOW
from services.common.matching.client import MatchingClient
from services.common.matching.errors import MatchingUnavailableError
from services.common.matching.notices import UNPUBLISHED, TaskNotice
from services.history.notices import NO_NOTICES, MatchingNotices
from services.matching.consumer import UNPUBLISHED_LATE_S
from tests.helpers import eventually
from tests.tracing import in_memory_spans

from .test_matching import Env, backlog_count, consumed, env, poll_waiting, workflow_task
from .workflows import EchoWorkflow, echo

__all__ = ["env"]  # the fixture, shared with test_matching

pytestmark = pytest.mark.timeout(90)


async def test_publish_reports_where_each_record_landed(env: Env) -> None:
    records = []
    for i in range(6):
        key, value, _ = workflow_task(f"tq-where-{i % 2}")
        records.append((kafka.TASKS, key, value, ()))
    where = await kafka.publish(env.producer, records)  # type: ignore[arg-type]
    reader = AIOKafkaConsumer(bootstrap_servers=env.settings.kafka_bootstrap, enable_auto_commit=False)
    await reader.start()
    try:
        for (_, key, value, _), at in zip(records, where, strict=True):
            assert at.partition == kafka.partition_for(key, 4)
            tp = TopicPartition(kafka.TASKS, at.partition)
            reader.assign([tp])
            reader.seek(tp, at.offset)
            got = await reader.getone()
            assert (got.offset, got.value) == (at.offset, value)
    finally:
        await reader.stop()


async def test_a_noticed_task_reaches_the_waiting_poll_ahead_of_the_fetch_and_only_once(env: Env) -> None:
    consumer = env.service._consumer
    assert consumer is not None
    key, value, task_id = workflow_task("tq-notice")
    partition = kafka.partition_for(key, 4)
    tp = TopicPartition(kafka.TASKS, partition)
    poll = asyncio.create_task(env.client.poll("default", "tq-notice", WORKFLOW, 1, 20.0, "w1"))
    await eventually(lambda: poll_waiting(env.service, "tq-notice"), what="the poll waiting")
    consumer._consumer.pause(tp)  # the fetch cannot deliver: only the notice can
    try:
        [at] = await kafka.publish(env.producer, [(kafka.TASKS, key, value, ())])  # type: ignore[arg-type]
        outcome = await env.service.noticed(partition, [TaskNotice(at.offset, value)])
        assert (outcome.matched, outcome.stale, outcome.left) == (1, 0, 0)
        tasks = await asyncio.wait_for(poll, 5)
        assert [t.task_id for t in tasks] == [task_id]
    finally:
        consumer._consumer.resume(tp)
    # The fetched copy is a task handed out lately: dropped, neither stored nor handed out again.
    await eventually(lambda: consumed(env, (partition, at.offset)), timeout=15, what="the copy ingested")
    assert await backlog_count(env) == 0
    assert await env.client.poll("default", "tq-notice", WORKFLOW, 1, 0.3, "w2") == []


async def test_a_noticed_workflow_task_brings_its_commits_update_requests_to_the_waiting_poll_only(
        env: Env) -> None:
    consumer = env.service._consumer
    assert consumer is not None
    waiting = [{"update_id": "u1", "name": "set", "input": "[1]"}]
    first, value, task_id = workflow_task("tq-updates")
    _, later_value, later_id = workflow_task("tq-updates")
    partition = kafka.partition_for(first, 4)
    tp = TopicPartition(kafka.TASKS, partition)
    poll = asyncio.create_task(env.client.poll("default", "tq-updates", WORKFLOW, 1, 20.0, "w1"))
    await eventually(lambda: poll_waiting(env.service, "tq-updates"), what="the poll waiting")
    consumer._consumer.pause(tp)
    try:
        records = [(kafka.TASKS, first, value, ()), (kafka.TASKS, first, later_value, ())]
        [at, later] = await kafka.publish(env.producer, records)  # type: ignore[arg-type]
        await env.service.noticed(partition, [TaskNotice(at.offset, value, (), waiting),
                                              TaskNotice(later.offset, later_value, (), waiting)])
        [given] = await asyncio.wait_for(poll, 5)
        assert given.task_id == task_id and given.updates == waiting
        # Held for a later poll, it reads the requests of then instead.
        [held] = await env.client.poll("default", "tq-updates", WORKFLOW, 1, 5.0, "w2")
        assert held.task_id == later_id and held.updates is None
    finally:
        consumer._consumer.resume(tp)


async def test_a_noticed_task_no_poll_waits_for_goes_to_the_next_poll_ahead_of_the_fetch(env: Env) -> None:
    # The poll comes a moment after the notice (a worker between two polls): it gets the task
    # from the notice, not after the fetch wait; the fetched copy is then dropped.
    consumer = env.service._consumer
    assert consumer is not None
    key, value, task_id = workflow_task("tq-held")
    partition = kafka.partition_for(key, 4)
    tp = TopicPartition(kafka.TASKS, partition)
    consumer._consumer.pause(tp)  # the fetch cannot deliver: only the notice can
    try:
        [at] = await kafka.publish(env.producer, [(kafka.TASKS, key, value, ())])  # type: ignore[arg-type]
        outcome = await env.service.noticed(partition, [TaskNotice(at.offset, value)])
        assert (outcome.matched, outcome.stale, outcome.left) == (0, 0, 1)
        tasks = await env.client.poll("default", "tq-held", WORKFLOW, 1, 5.0, "w1")
        assert [t.task_id for t in tasks] == [task_id]
        assert env.service.notices.taken_held == 1
    finally:
        consumer._consumer.resume(tp)
    await eventually(lambda: consumed(env, (partition, at.offset)), timeout=15, what="the copy ingested")
    assert await backlog_count(env) == 0
    assert await env.client.poll("default", "tq-held", WORKFLOW, 1, 0.3, "w2") == []


async def test_a_held_notice_gives_way_to_its_fetched_record(env: Env) -> None:
    # No poll comes before the fetch: the record goes the usual way (here the backlog), and
    # the task is handed out once, from there.
    key, value, task_id = workflow_task("tq-held-fetched")
    partition = kafka.partition_for(key, 4)
    consumer = env.service._consumer
    assert consumer is not None
    tp = TopicPartition(kafka.TASKS, partition)
    consumer._consumer.pause(tp)
    try:
        [at] = await kafka.publish(env.producer, [(kafka.TASKS, key, value, ())])  # type: ignore[arg-type]
        outcome = await env.service.noticed(partition, [TaskNotice(at.offset, value)])
        assert outcome.left == 1
    finally:
        consumer._consumer.resume(tp)
    await eventually(lambda: consumed(env, (partition, at.offset)), timeout=15, what="the task ingested")
    assert await backlog_count(env) == 1
    tasks = await env.client.poll("default", "tq-held-fetched", WORKFLOW, 1, 5.0, "w1")
    assert [t.task_id for t in tasks] == [task_id]
    assert env.service.notices.taken_held == 0
    assert await env.client.poll("default", "tq-held-fetched", WORKFLOW, 1, 0.3, "w2") == []


async def test_a_notice_the_consumer_has_overtaken_is_left_to_it(env: Env) -> None:
    key, value, task_id = workflow_task("tq-stale")
    partition = kafka.partition_for(key, 4)
    [at] = await kafka.publish(env.producer, [(kafka.TASKS, key, value, ())])  # type: ignore[arg-type]
    await eventually(lambda: consumed(env, (partition, at.offset)), timeout=15, what="the task ingested")
    assert await backlog_count(env) == 1  # no poll waited: the consumer stored it
    poll = asyncio.create_task(env.client.poll("default", "tq-stale", WORKFLOW, 1, 20.0, "w1"))
    tasks = await asyncio.wait_for(poll, 5)  # the backlog's
    assert [t.task_id for t in tasks] == [task_id]
    other = asyncio.create_task(env.client.poll("default", "tq-stale", WORKFLOW, 1, 1.0, "w2"))
    await eventually(lambda: poll_waiting(env.service, "tq-stale"), what="a second poll waiting")
    outcome = await env.service.noticed(partition, [TaskNotice(at.offset, value)])
    assert (outcome.matched, outcome.stale) == (0, 1)
    assert await other == []  # the task is not handed out twice


def _held_long(env: Env, partition: int) -> None:
    """As if the partition had been assigned long ago: notices sent at the commit are taken."""
    consumer = env.service._consumer
    assert consumer is not None
    consumer.assigned_at[partition] = time.monotonic() - 60


async def test_a_notice_sent_at_the_commit_reaches_the_waiting_poll_before_the_record_is_published(
        env: Env) -> None:
    key, value, task_id = workflow_task("tq-unpublished")
    partition = kafka.partition_for(key, 4)
    _held_long(env, partition)
    poll = asyncio.create_task(env.client.poll("default", "tq-unpublished", WORKFLOW, 1, 20.0, "w1"))
    await eventually(lambda: poll_waiting(env.service, "tq-unpublished"), what="the poll waiting")
    outcome = await env.service.noticed(partition, [TaskNotice(UNPUBLISHED, value)])
    assert (outcome.matched, outcome.stale, outcome.left) == (1, 0, 0)
    assert [t.task_id for t in await asyncio.wait_for(poll, 5)] == [task_id]
    # The relay publishes it after: the fetched copy is a task handed out lately, dropped.
    [at] = await kafka.publish(env.producer, [(kafka.TASKS, key, value, ())])
    await eventually(lambda: consumed(env, (partition, at.offset)), timeout=15, what="the copy ingested")
    assert await backlog_count(env) == 0
    assert await env.client.poll("default", "tq-unpublished", WORKFLOW, 1, 0.3, "w2") == []


async def test_a_notice_sent_at_the_commit_of_a_record_the_consumer_has_ingested_is_left_to_it(
        env: Env) -> None:
    # The notice came late (after the publication and the fetch): the task is not handed out twice.
    key, value, task_id = workflow_task("tq-unpublished-stale")
    partition = kafka.partition_for(key, 4)
    _held_long(env, partition)
    [at] = await kafka.publish(env.producer, [(kafka.TASKS, key, value, ())])
    await eventually(lambda: consumed(env, (partition, at.offset)), timeout=15, what="the task ingested")
    tasks = await env.client.poll("default", "tq-unpublished-stale", WORKFLOW, 1, 5.0, "w1")  # the backlog's
    assert [t.task_id for t in tasks] == [task_id]
    other = asyncio.create_task(env.client.poll("default", "tq-unpublished-stale", WORKFLOW, 1, 1.0, "w2"))
    await eventually(lambda: poll_waiting(env.service, "tq-unpublished-stale"), what="a second poll waiting")
    # Past RecentTasks' window (the task handed out is forgotten there), the consumer's own
    # memory of the records it ingested still tells.
    env.service._recent.discard(task_id)
    outcome = await env.service.noticed(partition, [TaskNotice(UNPUBLISHED, value)])
    assert (outcome.matched, outcome.stale) == (0, 1)
    assert await other == []


async def test_a_notice_sent_at_the_commit_to_a_partition_just_assigned_is_left_to_the_fetch(env: Env) -> None:
    # A record the partition's previous owner ingested is not among this instance's.
    key, value, _ = workflow_task("tq-just-assigned")
    partition = kafka.partition_for(key, 4)
    consumer = env.service._consumer
    assert consumer is not None
    consumer.assigned_at[partition] = time.monotonic()
    poll = asyncio.create_task(env.client.poll("default", "tq-just-assigned", WORKFLOW, 1, 0.5, "w1"))
    await eventually(lambda: poll_waiting(env.service, "tq-just-assigned"), what="the poll waiting")
    outcome = await env.service.noticed(partition, [TaskNotice(UNPUBLISHED, value)])
    assert (outcome.matched, outcome.stale) == (0, 1)
    assert await poll == []


async def test_a_notice_for_a_partition_owned_elsewhere_is_left(env: Env) -> None:
    _, value, _ = workflow_task("tq-elsewhere")
    outcome = await env.service.noticed(99, [TaskNotice(0, value)])
    assert (outcome.matched, outcome.left) == (0, 1)


# ---- separate services (every hop through the broker), with notices on, lost and off ----------

@pytest.fixture
async def separate(request: pytest.FixtureRequest, broker: EmbeddedBroker, fresh_dsn: str) -> AsyncIterator[Cluster]:
    settings = Settings(kafka_bootstrap=broker.bootstrap, database_url=fresh_dsn, shards=2, task_partitions=2,
                        frontend_port=0, session_timeout_ms=2000, colocate=False,
                        task_notices=getattr(request, "param", True))
    async with Cluster(settings) as c:
        yield c


async def _run_workflows(cluster: Cluster, tq: str, n: int = 3) -> None:
    client = await Client.connect(cluster.url, namespace="default")
    try:
        async with Worker(client, task_queue=tq, workflows=[EchoWorkflow], activities=[echo]):
            for i in range(n):
                result = await client.execute_workflow(EchoWorkflow.run, f"hi-{i}", id=f"{tq}-{uuid.uuid4().hex[:8]}",
                                                       task_queue=tq)
                assert result == f"hi-{i}"
    finally:
        await client.close()


async def _partitions_held(cluster: Cluster) -> None:
    """Until matching has held its partitions long enough to take notices sent at the commit
    (a partition just assigned leaves them to the fetch: services/matching/consumer.py)."""
    consumer = cluster.matching._consumer
    assert consumer is not None
    await eventually(lambda: consumer.assigned_at and all(
        time.monotonic() - at >= UNPUBLISHED_LATE_S for at in consumer.assigned_at.values()),
        what="matching's partitions held")


def _fetch_wait_ms(consumer: AIOKafkaConsumer) -> int:
    return int(consumer._fetcher._fetch_max_wait_ms)


async def test_with_notices_each_noticed_hop_fetches_with_the_longer_wait(separate: Cluster) -> None:
    # Notices carry commands, tasks and replies: the fetches are the fallback, not the path
    # (services/common/fetch_waits.py), and no longer ask the broker hundreds of times a second.
    assert separate.history.fetch_wait_ms == NOTICED_WAITS_MS[Consumer.HISTORY] > SEPARATE_WAITS_MS[Consumer.HISTORY]
    assert separate.history._consumer is not None
    assert _fetch_wait_ms(separate.history._consumer) == NOTICED_WAITS_MS[Consumer.HISTORY]
    matching = separate.matching._consumer
    assert matching is not None and _fetch_wait_ms(matching._consumer) == NOTICED_WAITS_MS[Consumer.MATCHING]
    replies = separate.frontend._replies
    assert replies is not None and _fetch_wait_ms(replies._consumer) == NOTICED_WAITS_MS[Consumer.REPLIES]
    await _run_workflows(separate, "q-waits", n=2)


async def test_with_notices_waiting_polls_get_published_tasks_from_them(separate: Cluster) -> None:
    notices = separate.history.notices
    assert isinstance(notices, MatchingNotices)
    await _partitions_held(separate)
    await _run_workflows(separate, "q-notices")
    assert notices.counts.sent > 0
    assert separate.matching.notices.matched > 0


async def test_with_every_notice_lost_workflows_complete_through_the_fetch(
        separate: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    async def lost(self: MatchingClient, partition: int, notices: object, timeout: float = 1.0) -> None:
        raise MatchingUnavailableError("the notice was lost")

    monkeypatch.setattr(MatchingClient, "notify_tasks", lost)
    notices = separate.history.notices
    assert isinstance(notices, MatchingNotices)
    await _run_workflows(separate, "q-lost")
    assert notices.counts.failed > 0 and notices.counts.sent == 0
    assert separate.matching.notices.matched == 0


@pytest.mark.parametrize("separate", [False], indirect=True, ids=["notices-off"])
async def test_with_notices_off_workflows_complete_through_the_fetch(separate: Cluster) -> None:
    assert separate.history.notices is NO_NOTICES
    matching = separate.matching._consumer
    assert matching is not None and _fetch_wait_ms(matching._consumer) == SEPARATE_WAITS_MS[Consumer.MATCHING]
    await _run_workflows(separate, "q-off")
    assert separate.matching.notices.matched == 0


@pytest.fixture
def traced() -> Iterator[InMemorySpanExporter]:
    """Tracing on (before the cluster starts: request it ahead of ``separate``)."""
    with in_memory_spans() as exporter:
        yield exporter


async def test_traced_a_noticed_task_gets_the_dispatch_span_its_worker_continues(
        traced: InMemorySpanExporter, separate: Cluster) -> None:
    await _partitions_held(separate)
    await _run_workflows(separate, "q-traced-notices", n=2)
    assert separate.matching.notices.matched > 0

    def noticed_and_continued() -> bool:
        finished = list(traced.get_finished_spans())
        dispatches = {s.context.span_id: s for s in finished
                      if s.name == "process kadence.tasks" and s.kind == SpanKind.CONSUMER}
        noticed = {i for i, s in dispatches.items() if (s.attributes or {}).get("kadence.notice") is True
                   and (s.attributes or {}).get("kadence.sync_match") is True}
        assert noticed, "no dispatch span of a noticed task"
        runs = [s for s in finished if s.name.startswith(("RunWorkflowTask", "RunActivity"))
                and s.kind == SpanKind.CONSUMER]
        assert runs and all(s.parent is not None and s.parent.span_id in dispatches for s in runs)
        assert any(s.parent is not None and s.parent.span_id in noticed for s in runs)
        return True

    await eventually(noticed_and_continued, what="a worker span continuing a noticed task's dispatch span")
