"""The co-location switch (docs/colocation.md): in one process tasks and replies are handed
over, not published; with KADENCE_COLOCATE=0 (``Settings.colocate``) every hop goes through
the broker, as between processes, and workflows run the same."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from kadence import Client, Worker
from services.cluster import Cluster
from services.common import colocation, kafka

from .workflows import EchoWorkflow, echo

pytestmark = pytest.mark.timeout(60)


async def _ends(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return sum((await consumer.end_offsets(tps)).values())
    finally:
        await consumer.stop()


@pytest.fixture
def cluster(either_path_cluster: Cluster) -> Cluster:
    return either_path_cluster  # every test here runs on both paths (conftest.py)


async def test_the_switch_chooses_the_path_and_workflows_run_the_same(cluster: Cluster) -> None:
    colocated = cluster.settings.colocate
    assert isinstance(cluster.history.tasks, colocation.OutboxTasks) is not colocated
    assert isinstance(cluster.history.replies, colocation.OutboxReplies) is not colocated
    bootstrap = cluster.settings.kafka_bootstrap
    tasks, replies = await _ends(bootstrap, kafka.TASKS), await _ends(bootstrap, kafka.REPLIES)
    client = await Client.connect(cluster.url, namespace="default")
    try:
        async with Worker(client, task_queue="q-switch", workflows=[EchoWorkflow], activities=[echo]):
            result = await client.execute_workflow(EchoWorkflow.run, "hi", id=f"switch-{uuid.uuid4().hex[:8]}",
                                                   task_queue="q-switch")
        assert result == "hi"
    finally:
        await client.close()
    published_tasks = await _ends(bootstrap, kafka.TASKS) > tasks
    published_replies = await _ends(bootstrap, kafka.REPLIES) > replies
    assert published_tasks is not colocated and published_replies is not colocated
    # The fetch gate runs only when commands are handed over.
    assert (cluster.history._gate is not None) is colocated
