"""Matching's internal API behind KADENCE_INTERNAL_KEY: the frontend's matching client
sends the key and polls; a caller without it is refused with 401."""

from __future__ import annotations

import asyncio
import uuid

import aiohttp
import pytest

from services.common import db, kafka
from services.common.config import Settings
from services.common.embedded import EmbeddedBroker
from services.common.matching import WORKFLOW, MatchingClient
from services.common.matching.errors import MatchingError
from services.matching import MatchingService
from tests.helpers import eventually

from .test_matching import PARTITIONS, workflow_task

pytestmark = pytest.mark.timeout(60)
KEY = "internal-key-0123456789"


async def test_remote_poll_needs_the_internal_key(broker: EmbeddedBroker, fresh_dsn: str) -> None:
    await db.migrate(fresh_dsn)
    await kafka.ensure_topics(broker.bootstrap, 4, PARTITIONS)
    settings = Settings(kafka_bootstrap=broker.bootstrap, database_url=fresh_dsn, task_partitions=PARTITIONS,
                        session_timeout_ms=2000, instance_id=f"m-{uuid.uuid4().hex[:6]}", internal_key=KEY)
    pool = await db.create_pool(fresh_dsn)
    service = MatchingService(settings, pool=pool)
    await service.start()
    producer = kafka.new_producer(broker.bootstrap)
    await producer.start()
    keyed, keyless = MatchingClient(pool, PARTITIONS, internal_key=KEY), MatchingClient(pool, PARTITIONS)
    try:
        await eventually(lambda: len(service.owned_partitions) == PARTITIONS, timeout=20)
        async with aiohttp.ClientSession() as http, http.get(service.address + "/internal/health") as resp:
            assert resp.status == 401
        with pytest.raises(MatchingError, match="401"):
            await keyless.poll("default", "tq-keyed", WORKFLOW, 1, 0.5)
        key, value, task_id = workflow_task("tq-keyed")
        await producer.send_and_wait(kafka.TASKS, value, key=key)
        tasks = await asyncio.wait_for(keyed.poll("default", "tq-keyed", WORKFLOW, 1, 10.0), 15)
        assert [t.task_id for t in tasks] == [task_id]
    finally:
        await keyed.close()
        await keyless.close()
        await producer.stop()
        await service.stop()
        await pool.close()
