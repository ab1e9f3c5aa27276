"""Outage classification and backoff (services/common/outage.py), the fatal path
(services/common/supervision.py) and the health answer (history/health.py, frontend /health)."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, NodeNotReadyError, UnsupportedVersionError

from services.common import outage
from services.common.health import HealthReport, health_answer
from services.common.runner import until_stopped
from services.common.supervision import Fatal, watch
from services.history.health import ShardHealth, ShardState, report
from tests.helpers import eventually, stays

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize("exc", [
    ConnectionRefusedError(111, "refused"), ConnectionResetError(), TimeoutError(), OSError(),
    asyncpg.InterfaceError("connection is closed"), asyncpg.ConnectionDoesNotExistError("gone"),
    asyncpg.CannotConnectNowError("starting up"), asyncpg.exceptions.AdminShutdownError("shutdown"),
    asyncpg.exceptions.TooManyConnectionsError("too many"), asyncpg.exceptions.SerializationError("retry"),
    # What asyncpg raises when the server shuts down in the middle of a query.
    asyncpg.exceptions.InternalClientError("cannot switch to state 12; another operation (2) is in progress"),
    KafkaConnectionError(), KafkaTimeoutError(), NodeNotReadyError(),
])
def test_outages_are_transient(exc: BaseException) -> None:
    assert outage.is_transient(exc)


@pytest.mark.parametrize("exc", [
    asyncpg.exceptions.CharacterNotInRepertoireError("invalid byte sequence for encoding"),
    asyncpg.exceptions.NumericValueOutOfRangeError("bigint out of range"),
    asyncpg.exceptions.UniqueViolationError("duplicate key"),
    UnsupportedVersionError(), RuntimeError("a bug"), KeyError("x"),
])
def test_data_errors_and_bugs_are_not(exc: BaseException) -> None:
    assert not outage.is_transient(exc)


def test_backoff_grows_is_capped_logs_once_then_periodically_and_on_recovery(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    b = outage.Backoff("shard 1 loop", logging.getLogger("t"))
    with caplog.at_level(logging.INFO, logger="t"):
        delays = [b.failed(ConnectionRefusedError()) for _ in range(12)]
        assert b.retrying and b.since is not None and "ConnectionRefusedError" in (b.last_error or "")
        assert 0.05 <= delays[0] <= 0.1
        assert all(d <= outage.MAX_DELAY_S for d in delays) and delays[-1] >= outage.MAX_DELAY_S / 2
        assert [r.levelname for r in caplog.records] == ["WARNING"]
        monkeypatch.setattr(outage, "REPORT_EVERY_S", 0.0)
        b.failed(ConnectionRefusedError())
        assert "still failing after 13 tries" in caplog.records[-1].message
        b.recovered()
        assert caplog.records[-1].levelname == "INFO" and "recovered after 13" in caplog.records[-1].message
    assert not b.retrying and b.since is None and b.delay() <= 0.1


async def test_a_watched_task_that_dies_or_returns_is_fatal_a_cancelled_one_is_not(
        caplog: pytest.LogCaptureFixture) -> None:
    async def bug() -> None:
        raise RuntimeError("a bug")

    async def returns() -> None:
        return None

    fatal = Fatal()
    cancelled = watch(asyncio.create_task(asyncio.sleep(10)), "sleeper", fatal)
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    await stays(lambda: not fatal.happened.is_set(), for_seconds=0.05, what="a cancelled loop is no death")
    await asyncio.gather(watch(asyncio.create_task(bug()), "the buggy loop", fatal), return_exceptions=True)
    await eventually(fatal.happened.is_set, what="fatal declared")
    assert fatal.happened.is_set() and fatal.reason is not None and "the buggy loop died" in fatal.reason
    assert any(r.levelname == "CRITICAL" and r.exc_info for r in caplog.records)
    other = Fatal()
    await watch(asyncio.create_task(returns()), "the returning loop", other)
    await eventually(lambda: other.reason is not None, what="fatal declared")
    assert other.reason == "the returning loop ended"


async def test_the_runner_wait_ends_on_fatal_with_its_reason_or_on_stop_with_none() -> None:
    fatal, stop = Fatal(), asyncio.Event()
    asyncio.get_running_loop().call_soon(fatal.declare, "history shard 1 died")
    assert await asyncio.wait_for(until_stopped(stop, fatal), 5) == "history shard 1 died"
    stop.set()
    assert await asyncio.wait_for(until_stopped(stop, Fatal()), 5) is None


def _shard(state: ShardState, since: float | None) -> ShardHealth:
    return ShardHealth(1, state, since, "ConnectionRefusedError()" if since else None, 0.0, 0)


def test_a_shard_retrying_past_the_threshold_or_stopped_makes_health_503() -> None:
    import time

    now = time.time()
    ok = report([_shard(ShardState.RUNNING, None), _shard(ShardState.RETRYING, now)], 10.0)
    assert ok.healthy and ok.details["stalled_shards"] == []
    assert health_answer({"history": lambda: ok}) == (200, {"status": "ok", "history": ok.details})
    late = report([_shard(ShardState.RETRYING, now - 11)], 10.0)
    status, body = health_answer({"history": lambda: late})
    assert status == 503 and body["status"] == "stalled" and body["history"]["stalled_shards"] == [1]
    assert body["history"]["shards"][0]["state"] == "retrying"
    stopped = report([_shard(ShardState.STOPPED, now)], 10.0)
    assert health_answer({"history": lambda: stopped})[0] == 503
    fatal = Fatal()
    fatal.declare("the history consumer task died")
    assert health_answer({}, fatal)[0] == 503
    assert health_answer({}) == (200, {"status": "ok"})
    assert health_answer({"x": lambda: HealthReport(True, {})}, Fatal())[0] == 200


def test_a_shard_blocked_past_the_threshold_makes_health_503_as_a_retrying_one_does() -> None:
    import time

    now = time.time()
    assert report([_shard(ShardState.BLOCKED, now - 2)], 10.0).healthy
    late = report([_shard(ShardState.BLOCKED, now - 11)], 10.0)
    assert not late.healthy and late.details["stalled_shards"] == [1]
    assert late.details["shards"][0]["state"] == "blocked"
