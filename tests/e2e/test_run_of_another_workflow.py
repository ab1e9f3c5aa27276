"""A command names its run by namespace, workflow id and run id together: a run id that
belongs to another workflow (or namespace) names no run, even when that run is loaded
already in the batch. A signal to workflow A naming the run id of workflow B, produced
right after a command for B on the same shard, was applied to B's run (B got A's signal),
crossing workflows and, as well, namespaces."""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer

from kadence.kafka import encode_signal, workflow_key
from services.cluster import Cluster
from services.common import kafka
from services.common.embedded import EmbeddedBroker
from tests.helpers import eventually

pytestmark = pytest.mark.timeout(90)

NS = "/api/v1/namespaces/default"


async def _signals(http: aiohttp.ClientSession, url: str, workflow_id: str) -> list[str]:
    async with http.get(f"{url}{NS}/workflows/{workflow_id}/history") as resp:
        events: list[dict[str, Any]] = (await resp.json())["events"]
    return [e["attributes"]["signal_name"] for e in events if e["event_type"] == "WorkflowExecutionSignaled"]


async def test_a_signal_naming_another_workflows_run_is_not_applied_to_that_run(
        cluster: Cluster, broker: EmbeddedBroker) -> None:
    tag = uuid.uuid4().hex[:8]
    victim = f"victim-{tag}"
    partitions = 2
    shard = kafka.partition_for(workflow_key("default", victim), partitions)
    # Another workflow on the victim's shard: its commands reach the same batches.
    attacker = next(w for w in (f"attacker-{tag}-{i}" for i in range(1000))
                    if kafka.partition_for(workflow_key("default", w), partitions) == shard)
    async with aiohttp.ClientSession() as http:
        for wid in (victim, attacker):
            async with http.post(f"{cluster.url}{NS}/workflows", json={
                    "workflow_id": wid, "workflow_type": "T", "task_queue": f"q-{tag}", "input": []}) as resp:
                assert resp.status == 201, await resp.text()
        async with http.get(f"{cluster.url}{NS}/workflows/{victim}") as resp:
            victim_run = (await resp.json())["run_id"]

        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=100)
        await producer.start()
        try:
            # One produce batch, so one history batch: the victim's run is loaded by the first.
            first = await producer.send(kafka.REQUESTS, encode_signal("default", victim, "legit", [1]),
                                        key=workflow_key("default", victim))
            second = await producer.send(kafka.REQUESTS,
                                         encode_signal("default", attacker, "hostile", [2], run_id=victim_run),
                                         key=workflow_key("default", attacker))
            await first
            await second
            # A marker after both: once it is applied, both were.
            await producer.send_and_wait(kafka.REQUESTS, encode_signal("default", attacker, "marker", []),
                                         key=workflow_key("default", attacker))
        finally:
            await producer.stop()

        async def marker_applied() -> bool:
            return "marker" in await _signals(http, cluster.url, attacker)
        await eventually(marker_applied, what="the marker signal applied")
        assert await _signals(http, cluster.url, victim) == ["legit"]
        assert await _signals(http, cluster.url, attacker) == ["marker"]
