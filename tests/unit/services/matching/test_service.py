"""MatchingService.stop and its TaskConsumer.stop (services/matching): every step runs whatever an earlier one raised."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.common.config import Settings
from services.matching.consumer import TaskConsumer
from services.matching.service import MatchingService
from tests.unit.services._stop_parts import Failed, Part

pytestmark = pytest.mark.timeout(10)


async def test_a_failed_consumer_stop_still_stops_the_server_and_the_pool() -> None:
    stopped: list[str] = []
    matching = MatchingService(Settings(database_url="postgresql://nowhere/none"))
    parts: Any = matching
    parts._consumer = Part("consumer", stopped, fails=True)
    parts._http, parts._pool = Part("server", stopped), Part("pool", stopped)
    with pytest.raises(Failed):
        await matching.stop()
    assert stopped == ["consumer", "server", "pool"]
    await matching.stop()  # a second stop finds nothing left to stop
    assert stopped == ["consumer", "server", "pool"]


async def test_a_failed_group_consumer_stop_still_stops_the_producer() -> None:
    stopped: list[str] = []
    matching = MatchingService(Settings(database_url="postgresql://nowhere/none"))
    consumer: Any = TaskConsumer(matching.settings, matching)
    await consumer._consumer.stop()  # the real clients were never started: nothing of them runs
    await consumer._producer.stop()
    consumer._consumer, consumer._producer = Part("group consumer", stopped, fails=True), Part("producer", stopped)
    with pytest.raises(Failed):
        await consumer.stop()
    assert stopped == ["group consumer", "producer"]


async def test_the_stop_awaits_every_background_store_whatever_one_raised(caplog: pytest.LogCaptureFixture) -> None:
    """A store that raised (not a database error: those it logs itself) did end the wait for
    the others, and the pool closed under a store still writing."""
    stopped: list[str] = []
    matching = MatchingService(Settings(database_url="postgresql://nowhere/none"))
    parts: Any = matching
    parts._consumer, parts._http, parts._pool = Part("consumer", stopped), Part("server", stopped), Part("pool", stopped)

    async def fails() -> None:
        raise RuntimeError("a store's bug")

    async def writes() -> None:
        for _ in range(5):  # a few turns of the loop: still writing when the stop begins
            await asyncio.sleep(0)
        stopped.append("store")

    for _ in range(10):  # ten of each: the set of them is awaited in no set order
        matching._in_background(fails())
        matching._in_background(writes())
    await matching.stop()
    assert stopped == ["consumer", *["store"] * 10, "server", "pool"]
    assert sum("a store's bug" in repr(r.exc_info and r.exc_info[1]) for r in caplog.records) == 10
