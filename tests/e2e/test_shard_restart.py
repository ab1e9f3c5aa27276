"""A history shard whose loop dies of a bug is restarted from its stored offset, within a bound
(issue 15, item 3: no silent half-alive process)."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from services.common import db, kafka
from services.history import HistoryService
from services.history import service as service_module

from .history_harness import SHARDS, Topics, history_running, settings_for, start_record, until

pytestmark = pytest.mark.timeout(90)


def _on_partition(partition: int, prefix: str) -> str:
    return next(f"{prefix}-{i}" for i in range(1000)
                if kafka.partition_for(kafka.workflow_key("default", f"{prefix}-{i}"), SHARDS) == partition)


async def test_a_shard_whose_loop_dies_is_restarted_and_takes_the_command_again(broker, fresh_dsn) -> None:
    async with history_running(broker.bootstrap, fresh_dsn) as service, Topics(broker.bootstrap) as io:
        await until(lambda: len(service.shards) == SHARDS, seconds=20)
        old = service.shards[0]
        failures: list[Any] = []

        async def bug(batch: Any, early: Any = None) -> None:
            failures.append(batch)
            raise RuntimeError("a bug in the shard loop")

        old.runner.process = bug  # type: ignore[method-assign]
        start = start_record(_on_partition(0, "restart"))
        await io.send("StartWorkflowExecution", start)
        # The new shard runs the command the old one died on: it was not committed.
        reply = await io.next("kadence.replies", request_id=start["request_id"], timeout=30)
        assert reply["ok"] and failures
        assert service.shards[0] is not old and old.failure is not None
        assert not service.fatal.happened.is_set()
        assert service.health().healthy


async def test_too_many_shard_failures_make_the_service_fatal_and_its_health_503(
        broker, fresh_dsn, monkeypatch) -> None:
    monkeypatch.setattr(service_module, "MAX_SHARD_RESTARTS", 0)
    await db.migrate(fresh_dsn)
    await kafka.ensure_topics(broker.bootstrap, SHARDS, 2)
    service = HistoryService(settings_for(broker.bootstrap, fresh_dsn, history_health_port=0))
    await service.start()
    try:
        async with Topics(broker.bootstrap) as io, aiohttp.ClientSession() as http:
            await _fail_one_shard(service, io, http)
    finally:
        await service.stop()


async def _fail_one_shard(service: HistoryService, io: Topics, http: aiohttp.ClientSession) -> None:
    assert service.health_server is not None
    health = service.health_server.url + "/health"
    await until(lambda: len(service.shards) == SHARDS, seconds=20)
    async with http.get(health) as r:
        body = await r.json()
        assert r.status == 200 and body["status"] == "ok"
        assert [(s["shard_id"], s["state"]) for s in body["history"]["shards"]] == [(0, "running"), (1, "running")]

    async def bug(batch: Any, early: Any = None) -> None:
        raise RuntimeError("a bug in the shard loop")

    service.shards[1].runner.process = bug  # type: ignore[method-assign]
    await io.send("StartWorkflowExecution", start_record(_on_partition(1, "fatal")))
    await until(service.fatal.happened.is_set, seconds=20)
    assert service.fatal.reason is not None and "a bug in the shard loop" in service.fatal.reason
    async with http.get(health) as r:
        body = await r.json()
        assert r.status == 503 and body["status"] == "stalled" and "a bug" in body["fatal"]
        assert body["history"]["stalled_shards"] == [1]
        assert body["history"]["shards"][1]["state"] == "stopped"
