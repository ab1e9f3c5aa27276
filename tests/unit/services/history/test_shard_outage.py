"""A history shard's loops through a PostgreSQL outage, and a loop that dies of a bug.

The store is a stand-in that fails as PostgreSQL does while it is down (the connection
refused), then answers: the shard must wait the outage out and apply the command, not let
its loop task die with the process still up (issue 15, item 3).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
import pytest
from aiokafka.structs import ConsumerRecord

from kadence_protocol import avro
from services.common import kafka
from services.common.config import Settings
from services.history import engine, redispatch
from services.history.health import ShardState
from services.history.service import MAX_SHARD_RESTARTS, HistoryService
from services.history.shard import Shard, ShardConfig
from services.history.state import MutableState
from tests.helpers import eventually
from tests.unit.services.history.test_state import MemoryContext, _start

pytestmark = pytest.mark.timeout(20)


class FlakyStore:
    """What the shard asks of HistoryStore, in memory; ``down`` calls fail first with ``error``."""

    def __init__(self, state: MutableState, *, down: int = 0, error: BaseException | None = None,
                 timers_down: int = 0) -> None:
        self.state = state
        self.down = down
        self.timers_down = timers_down
        self.error = error or ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")
        self.loads = 0
        self.commits: list[tuple[int | None, list[Any]]] = []

    def _fail(self) -> None:
        if self.down > 0:
            self.down -= 1
            raise self.error

    async def current_run(self, namespace: str, workflow_id: str) -> str | None:
        return self.state.run_id

    async def current_runs(self, keys: Any) -> dict[tuple[str, str], str]:
        return {(self.state.namespace, self.state.workflow_id): self.state.run_id}

    async def load_state(self, run_id: str) -> MutableState | None:
        self.loads += 1
        self._fail()
        return MutableState.loads(self.state.dumps()) if run_id == self.state.run_id else None

    async def commit(self, shard_id: int, range_id: int, offset: int | None, mutations: list[Any],
                     *rest: Any) -> None:
        self.commits.append((offset, mutations))

    async def timers_before(self, shard_id: int, until: int) -> list[Any]:
        if self.timers_down > 0:
            self.timers_down -= 1
            raise self.error
        return []

    async def delete_outbox(self, shard_id: int, up_to: int, range_id: int) -> None:
        pass

    async def shard_range_id(self, shard_id: int) -> int:
        return 0

    async def trim_request_ids(self, shard_id: int, older_than_s: float) -> None:
        pass


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The relay's publications, kept here (this test has no broker; the e2e tests do)."""
    sent: list[Any] = []

    async def publish(producer: Any, records: Any) -> None:
        sent.extend(records)

    monkeypatch.setattr(kafka, "publish", publish)
    return sent


async def _running_state() -> MutableState:
    ctx = MemoryContext()
    await engine.start_workflow(ctx, _start())
    return next(iter(ctx.runs.values()))


def _signal(offset: int, request_id: str | None = None) -> ConsumerRecord[bytes, bytes]:
    value = avro.encode("SignalWorkflowExecution", {
        "namespace": "ns", "workflow_id": "wf", "run_id": None, "signal_name": "go", "input": "[]",
        "request_id": f"sig-{offset}" if request_id is None else request_id, "identity": "", "reply_to": None})
    return ConsumerRecord(kafka.REQUESTS, 0, offset, 0, 0, kafka.workflow_key("ns", "wf"), value, None,
                          0, 0, [])


async def _shard(store: FlakyStore) -> Shard:
    shard = Shard(0, store, None, "me")  # type: ignore[arg-type]
    shard.start()
    return shard


async def test_a_state_load_refused_while_postgres_is_down_is_retried_and_the_command_applied(
        published: list[Any], caplog: pytest.LogCaptureFixture) -> None:
    store = FlakyStore(await _running_state(), down=3)
    shard = await _shard(store)
    try:
        with caplog.at_level(logging.INFO, logger="services.history.shard"):
            await shard.feed([_signal(0)])
            await eventually(lambda: store.commits, what="the batch committed after the outage")
        offset, mutations = store.commits[0]
        assert offset == 1
        assert [e["event_type"] for m in mutations for e in m.events] == ["WorkflowExecutionSignaled"]
        assert store.loads == 4  # three refused, then the load that worked
        assert shard.failure is None and not shard.stopped
        assert shard.health().state is ShardState.RUNNING
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "shard 0 loop" in r.message]
        assert len(warnings) == 1  # the first failure, not one per try
        assert any("recovered after 3 failed tries" in r.message for r in caplog.records)
        # And the loop goes on with the next command.
        await shard.feed([_signal(1)])
        await eventually(lambda: len(store.commits) == 2, what="the next batch committed")
    finally:
        await shard.stop()


async def test_the_shard_reports_retrying_while_the_outage_lasts(published: list[Any]) -> None:
    store = FlakyStore(await _running_state(), down=10**6)
    shard = await _shard(store)
    try:
        await shard.feed([_signal(0)])
        health = await eventually(lambda: (h := shard.health()).state is ShardState.RETRYING and h,
                                  what="the shard reports retrying")
        assert health.last_error is not None and "ConnectionRefusedError" in health.last_error
        assert health.retrying_loops == ("loop",)
        assert health.stalled(0.0) and not health.stalled(3600.0)
        store.down = 0
        await eventually(lambda: store.commits, timeout=15, what="the batch committed once PostgreSQL is back")
        assert shard.health().state is ShardState.RUNNING
    finally:
        await shard.stop()


async def test_the_timer_reload_survives_an_outage(published: list[Any]) -> None:
    store = FlakyStore(await _running_state(), timers_down=2)
    shard = await _shard(store)
    try:
        await eventually(lambda: store.timers_down == 0 and not shard.backoffs["timers"].retrying,
                         what="the timer loop reloaded after the outage")
        assert shard.failure is None
    finally:
        await shard.stop()


async def test_a_loop_that_dies_of_a_bug_stops_the_shard_loudly_and_tells_the_service(
        published: list[Any], caplog: pytest.LogCaptureFixture) -> None:
    store = FlakyStore(await _running_state(), down=1, error=RuntimeError("a bug"))
    told: list[BaseException] = []
    shard = Shard(0, store, None, "me", ShardConfig(on_failure=lambda s, exc: told.append(exc)))  # type: ignore[arg-type]
    shard.start()
    try:
        await shard.feed([_signal(0)])
        await eventually(lambda: told, what="the service told of the failure")
        assert isinstance(told[0], RuntimeError) and shard.stopped
        assert shard.health().state is ShardState.STOPPED and shard.health().stalled(3600.0)
        assert any(r.levelno == logging.CRITICAL and "loop died" in r.message and r.exc_info
                   for r in caplog.records)
        # A stopped shard's inbox is drained, so a consumer feeding it cannot block for ever.
        assert shard.intake.empty()
    finally:
        await shard.stop()


async def test_the_service_restarts_a_failed_shard_a_bounded_number_of_times_then_is_fatal() -> None:
    service = HistoryService(Settings())

    class Dead:
        shard_id = 3

    for i in range(MAX_SHARD_RESTARTS):
        service._shard_failed(Dead(), RuntimeError(f"bug {i}"))  # type: ignore[arg-type]
        assert service._restarts == {3} and not service.fatal.happened.is_set()
    service._shard_failed(Dead(), RuntimeError("once too often"))  # type: ignore[arg-type]
    assert service.fatal.happened.is_set()
    assert service.fatal.reason is not None and "once too often" in service.fatal.reason


async def test_the_relay_waits_out_a_broker_outage_and_publishes(monkeypatch: pytest.MonkeyPatch) -> None:
    from aiokafka.errors import KafkaConnectionError

    sent: list[Any] = []
    refusals = [KafkaConnectionError("broker down"), KafkaConnectionError("broker down")]

    async def publish(producer: Any, records: Any) -> None:
        if refusals:
            raise refusals.pop()
        sent.extend(records)

    monkeypatch.setattr(kafka, "publish", publish)
    store = FlakyStore(await _running_state())
    shard = await _shard(store)
    try:
        await shard.feed([_signal(0)])
        await eventually(lambda: sent, what="the outbox published once the broker is back")
        assert not refusals and not shard.backoffs["relay"].retrying and shard.failure is None
    finally:
        await shard.stop()


async def test_after_an_outage_the_redispatch_scan_checks_the_shard_is_still_ours(
        published: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redispatch, "REDISPATCH_AFTER_MS", 20)
    store = FlakyStore(await _running_state())
    shard = Shard(0, store, None, "me")  # type: ignore[arg-type]
    shard.range_id = 1  # the store says 0: another process took the shard over meanwhile
    shard.redispatcher.watch(store.state.run_id, 0)  # so that the scan loads a run
    store.down = 2
    shard.start()
    try:
        await eventually(shard.lost.is_set, what="the shard stops as not ours any more")
        assert shard.failure is None and shard.health().state is ShardState.STOPPED
    finally:
        await shard.stop()


class HangingStore(FlakyStore):
    """A database that neither answers nor fails (a paused server): commits wait for ``answer``."""

    def __init__(self, state: MutableState) -> None:
        super().__init__(state)
        self.answer = asyncio.Event()

    async def commit(self, shard_id: int, range_id: int, offset: int | None, mutations: list[Any],
                     *rest: Any) -> None:
        await self.answer.wait()
        await super().commit(shard_id, range_id, offset, mutations, *rest)


async def test_the_shard_reports_blocked_while_a_batch_waits_on_a_silent_database(published: list[Any]) -> None:
    store = HangingStore(await _running_state())
    shard = await _shard(store)
    try:
        await shard.feed([_signal(0)])
        assert shard.health().state is ShardState.RUNNING  # a batch just begun is no news
        await eventually(lambda: shard.health().state is ShardState.BLOCKED, timeout=5,
                         what="the shard reports blocked")
        health = shard.health()
        assert health.retrying_loops == ("loop",) and health.stalled(0.5) and not health.stalled(3600.0)
        store.answer.set()
        await eventually(lambda: store.commits, what="the batch committed once the database answers")
        assert shard.health().state is ShardState.RUNNING
    finally:
        await shard.stop()


class LandedStore(FlakyStore):
    """A connection that drops at COMMIT after PostgreSQL committed: the first commit is kept
    (as the database has it) and then fails as a lost connection does."""

    def __init__(self, state: MutableState) -> None:
        super().__init__(state)
        self.drop_answers = 1
        self.stored_offset = 0

    async def commit(self, shard_id: int, range_id: int, offset: int | None, mutations: list[Any],
                     *rest: Any) -> None:
        await super().commit(shard_id, range_id, offset, mutations, *rest)
        if offset is not None:
            self.stored_offset = offset
        if self.drop_answers > 0:
            self.drop_answers -= 1
            raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation")

    async def committed_offset(self, shard_id: int, range_id: int) -> int:
        return self.stored_offset


async def test_a_commit_that_landed_though_its_answer_was_lost_is_not_applied_again(
        published: list[Any]) -> None:
    store = LandedStore(await _running_state())
    shard = await _shard(store)
    try:
        await shard.feed([_signal(0, request_id="")])  # no request id: nothing else would catch a copy
        await eventually(lambda: store.commits, what="the batch committed")
        await shard.feed([_signal(1)])
        await eventually(lambda: len(store.commits) >= 2, what="the next batch committed")
        signaled = [offset for offset, mutations in store.commits for m in mutations for e in m.events
                    if e["event_type"] == "WorkflowExecutionSignaled"]
        assert [offset for offset, _ in store.commits] == [1, 2]  # the first was not redone
        assert signaled == [1, 2]
        assert shard.failure is None and shard.health().state is ShardState.RUNNING
    finally:
        await shard.stop()
