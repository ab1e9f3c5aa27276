"""A client rides out a frontend that is down: its start (idempotent by request id) is sent
again until the frontend is back, as its result waits and its workers' polls are."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid

import pytest

from kadence import Client, Worker
from services.cluster import Cluster
from services.common.config import Settings
from services.common.embedded import EmbeddedBroker
from tests.helpers import eventually

from .workflows import EchoWorkflow, echo

pytestmark = pytest.mark.timeout(120)


async def test_a_start_waits_for_a_frontend_stopped_then_started_again(
        broker: EmbeddedBroker, fresh_dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(kafka_bootstrap=broker.bootstrap, database_url=fresh_dsn, shards=2, task_partitions=2,
                        frontend_port=0, session_timeout_ms=2000)
    async with Cluster(settings) as first:
        url = first.url
    # Started again on the port the first bound (the system's pick): the client's address stays.
    settings = dataclasses.replace(settings, frontend_port=int(url.rsplit(":", 1)[1]))
    # The frontend is down now (its port refuses connections).
    caplog.set_level(logging.WARNING, logger="kadence.retry")
    client = await Client.connect(url, namespace="default")
    wid = f"outage-{uuid.uuid4().hex[:8]}"
    try:
        start = asyncio.ensure_future(client.start_workflow(EchoWorkflow.run, "back", id=wid, task_queue="q-outage"))

        def retried() -> int:
            tries = sum(1 for r in caplog.records if "retrying" in r.getMessage() and wid in r.getMessage())
            return tries if tries >= 6 or start.done() else 0
        # More tries than the client once made in all (5 over about 3 s) before giving up.
        await eventually(retried, timeout=20, what="the start retried past five tries")
        assert not start.done(), start.exception() if start.done() else None
        async with Cluster(settings):
            handle = await asyncio.wait_for(start, 30)
            async with Worker(client, task_queue="q-outage", workflows=[EchoWorkflow], activities=[echo]):
                assert await asyncio.wait_for(handle.result(), 30) == "back"
    finally:
        await client.close()
