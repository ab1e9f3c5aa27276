"""A client rides out a frontend that is down: its start (idempotent by request id) is sent
again until the frontend is back, as its result waits and its workers' polls are; an
update's wait without a timeout waits through an outage longer than the client's retry
budget, as result() does."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid

import pytest

from kadence import Client, Worker, workflow
from kadence.common import Backoff
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


@workflow.defn
class Gate:
    """An update that completes once the gate is opened by a signal."""

    def __init__(self) -> None:
        self.open = False

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: self.open)
        await workflow.wait_condition(workflow.all_handlers_finished)

    @workflow.signal
    def open_gate(self) -> None:
        self.open = True

    @workflow.update
    async def pass_gate(self) -> str:
        await workflow.wait_condition(lambda: self.open)
        return "passed"


async def test_an_update_wait_outlasts_an_outage_longer_than_the_retry_budget(
        broker: EmbeddedBroker, fresh_dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    """The client's retry budget is cut to 3 s (30 s by default) so that an outage longer
    than it stays short; the wait used to end with the budget, RPCError Unavailable."""
    settings = Settings(kafka_bootstrap=broker.bootstrap, database_url=fresh_dsn, shards=2, task_partitions=2,
                        frontend_port=0, session_timeout_ms=2000)
    caplog.set_level(logging.WARNING, logger="kadence._client")
    wid = f"gate-{uuid.uuid4().hex[:8]}"
    first = Cluster(settings)
    await first.start()
    # Started again later on the port the first bound (the system's pick): the client's address stays.
    settings = dataclasses.replace(settings, frontend_port=int(first.url.rsplit(":", 1)[1]))
    client = await Client.connect(first.url, retry=Backoff(attempts=0, within=3.0, first=0.2, cap=1.0))
    try:
        async with Worker(client, task_queue="q-gate", workflows=[Gate]):
            try:
                handle = await client.start_workflow(Gate.run, id=wid, task_queue="q-gate")
                update = await handle.start_update(Gate.pass_gate, wait_for_stage="accepted")
                waiting = asyncio.ensure_future(update.result())
            finally:
                await first.stop()  # the frontend is down now (its port refuses connections)

            def past_the_budget() -> bool:
                return waiting.done() or any("waiting for the completed outcome" in r.getMessage()
                                             for r in caplog.records)
            await eventually(past_the_budget, timeout=30, what="the update's wait retried past the budget")
            assert not waiting.done(), waiting.exception() if waiting.done() else None
            async with Cluster(settings):
                await handle.signal(Gate.open_gate)
                assert await asyncio.wait_for(waiting, 60) == "passed"
                await asyncio.wait_for(handle.result(), 30)
    finally:
        await client.close()
