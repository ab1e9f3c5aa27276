"""One start sent twice over Kafka and at the same time over HTTP, all with one request id:
one run, every sender answered with it; a signal produced twice with one request id applies once."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from kadence import Client
from kadence import kafka as ingress
from services.cluster import Cluster

pytestmark = pytest.mark.timeout(120)


async def test_one_start_over_kafka_twice_and_over_http_concurrently_makes_one_run(
        either_path_cluster: Cluster) -> None:
    cluster = either_path_cluster
    client = await Client.connect(cluster.url)
    try:
        async with ingress.KafkaIngress(cluster.settings.kafka_bootstrap) as kafka:
            for n in range(10):
                wid, rid = f"dup-{uuid.uuid4().hex[:8]}-{n}", uuid.uuid4().hex
                answers = await asyncio.gather(
                    kafka.start_workflow("default", wid, "ApprovalWorkflow", "q-nobody", request_id=rid),
                    kafka.start_workflow("default", wid, "ApprovalWorkflow", "q-nobody", request_id=rid),
                    client.start_workflow("ApprovalWorkflow", id=wid, task_queue="q-nobody", request_id=rid))
                kafka_one, kafka_two, handle = answers
                assert kafka_one.ok and kafka_two.ok, (kafka_one, kafka_two)
                assert kafka_one.run_id == kafka_two.run_id == handle.run_id
        conn = await asyncpg.connect(cluster.settings.database_url)
        try:
            counts = await conn.fetch("SELECT workflow_id, count(*) AS n FROM executions"
                                      " WHERE workflow_id LIKE 'dup-%' GROUP BY workflow_id")
        finally:
            await conn.close()
        assert len(counts) == 10 and {r["n"] for r in counts} == {1}
    finally:
        await client.close()
