"""A history shard whose loop dies of a bug is restarted from its stored offset, within a bound
(issue 15, item 3: no silent half-alive process)."""

from __future__ import annotations

from typing import Any

import pytest

from services.common import kafka
from services.history import service as service_module

from .history_harness import SHARDS, Topics, history_running, start_record, until

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

        old._process = bug  # type: ignore[method-assign]
        start = start_record(_on_partition(0, "restart"))
        await io.send("StartWorkflowExecution", start)
        # The new shard runs the command the old one died on: it was not committed.
        reply = await io.next("kadence.replies", request_id=start["request_id"], timeout=30)
        assert reply["ok"] and failures
        assert service.shards[0] is not old and old.failure is not None
        assert not service.fatal.happened.is_set()
        assert service.health().healthy


async def test_too_many_shard_failures_make_the_service_fatal(broker, fresh_dsn, monkeypatch) -> None:
    monkeypatch.setattr(service_module, "MAX_SHARD_RESTARTS", 0)
    async with history_running(broker.bootstrap, fresh_dsn) as service, Topics(broker.bootstrap) as io:
        await until(lambda: len(service.shards) == SHARDS, seconds=20)

        async def bug(batch: Any, early: Any = None) -> None:
            raise RuntimeError("a bug in the shard loop")

        service.shards[1]._process = bug  # type: ignore[method-assign]
        await io.send("StartWorkflowExecution", start_record(_on_partition(1, "fatal")))
        await until(service.fatal.happened.is_set, seconds=20)
        assert service.fatal.reason is not None and "a bug in the shard loop" in service.fatal.reason
        report = service.health()
        assert not report.healthy and report.details["stalled_shards"] == [1]
