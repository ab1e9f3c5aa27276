"""The shard's units on their own: the run cache, the outbox relay, the timer queue and
re-dispatch (services/history/cache.py, relay.py, timers.py, redispatch.py), against
in-memory stores; and the shard's observer hooks."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord

from kadence_protocol import avro
from kadence_protocol.enums import RunStatus
from services.common import kafka, outage
from services.history import engine, redispatch, relay
from services.history.builder import OutboxMessage
from services.history.cache import RunCache
from services.history.memory import Tails
from services.history.redispatch import Redispatcher
from services.history.relay import OutboxRelay
from services.history.state import MutableState
from services.history.timers import TimerQueue
from tests.helpers import eventually, stays
from tests.unit.services.history.test_state import MemoryContext, _start

pytestmark = pytest.mark.timeout(15)
log = logging.getLogger(__name__)


async def _state(workflow_id: str = "wf") -> MutableState:
    ctx = MemoryContext()
    await engine.start_workflow(ctx, _start(workflow_id))
    return next(iter(ctx.runs.values()))


class Store:
    """The store methods the units use, in memory."""

    def __init__(self, *states: MutableState) -> None:
        self.states = {s.run_id: s for s in states}
        self.loads: list[str] = []
        self.lookups: list[list[tuple[str, str]]] = []
        self.pending: list[Any] = []
        self.deleted: list[int] = []
        self.timers: list[dict[str, Any]] = []

    async def load_state(self, run_id: str) -> MutableState | None:
        self.loads.append(run_id)
        return self.states.get(run_id)

    async def current_runs(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        self.lookups.append(sorted(keys))
        return {(s.namespace, s.workflow_id): s.run_id for s in self.states.values()
                if (s.namespace, s.workflow_id) in keys}

    async def pending_outbox(self, shard_id: int) -> list[Any]:
        return self.pending

    async def next_outbox_id(self, shard_id: int) -> int:
        return max((i for i, _ in self.pending), default=0) + 1

    async def delete_outbox(self, shard_id: int, up_to: int, range_id: int) -> None:
        self.deleted.append(up_to)

    async def timers_before(self, shard_id: int, until: int) -> list[dict[str, Any]]:
        return [t for t in self.timers if t["fire_at"] <= until]


def _record(name: str, key: str, offset: int = 0, **cmd: Any) -> ConsumerRecord[bytes, bytes]:
    value = avro.encode(name, cmd)
    return ConsumerRecord(kafka.REQUESTS, 0, offset, 0, 0, kafka.workflow_key("ns", key), value,
                          None, 0, 0, [])


# ---- run cache -------------------------------------------------------------------------------


def _published(monkeypatch: pytest.MonkeyPatch, module: Any) -> list[Any]:
    """What ``module`` publishes to Kafka from now on, kept instead of sent."""
    published: list[Any] = []

    async def publish(producer: Any, records: Any) -> None:
        published.extend(records)

    monkeypatch.setattr(module.kafka, "publish", publish)
    return published


def _frozen_clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """``time.time()`` reads ``clock[0]`` (seconds; an hour into the epoch) from now on."""
    clock = [3_600_000.0]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    return clock


async def test_the_cache_loads_once_and_evicts_the_least_recent_run_with_its_tail() -> None:
    a, b = await _state("a"), await _state("b")
    store = Store(a, b)
    cache = RunCache(store, 0, Tails(), size=1)
    assert await cache.load(a.run_id) is a and await cache.load(a.run_id) is a
    assert store.loads == [a.run_id]
    cache.tails.extend(a.run_id, 1, [(1, b"x", {})])
    await cache.load(b.run_id)
    assert list(cache.runs) == [b.run_id] and cache.tails.get(a.run_id) is None
    assert cache.current[("ns", "b")] == b.run_id


async def test_closed_runs_are_kept_to_their_own_smaller_bound_and_running_ones_stay() -> None:
    running = [await _state(f"r{i}") for i in range(3)]
    closed = [dataclasses.replace(await _state(f"c{i}"), status=RunStatus.COMPLETED) for i in range(4)]
    cache = RunCache(Store(), 0, Tails(), size=10, closed_size=2)
    for state in [running[0], closed[0], running[1], closed[1], closed[2], running[2], closed[3]]:
        cache.tails.extend(state.run_id, 1, [(1, b"x", {})])
        cache.remember(state)
    assert set(cache.runs) == {s.run_id for s in running} | {closed[2].run_id, closed[3].run_id}
    assert cache.tails.get(closed[0].run_id) is None and cache.tails.get(running[0].run_id) is not None
    # The workflows' current runs are still known: a closed one is read back from the store.
    assert cache.current[("ns", "c0")] == closed[0].run_id
    # A run remembered again once it closed leaves the running ones' share.
    cache.remember(dataclasses.replace(running[0], status=RunStatus.COMPLETED))
    assert running[0].run_id in cache.runs and closed[2].run_id not in cache.runs
    assert list(cache.closed) == [closed[3].run_id, running[0].run_id]


async def test_a_failed_batch_forgets_what_it_changed() -> None:
    a = await _state("a")
    cache = RunCache(Store(), 0, Tails())
    cache.remember(a)
    cache.forget([a])
    assert not cache.runs and not cache.current


async def test_a_run_a_batch_just_made_is_current_before_its_start_event() -> None:
    """The batch context remembers a new run before its WorkflowExecutionStarted is added:
    remembered as any run, it left the closed run it replaced current, and a second start of
    the id in the batch made a second running run (tests/e2e/test_start_races.py)."""
    old = dataclasses.replace(await _state("wf"), status=RunStatus.TERMINATED)
    cache = RunCache(Store(), 0, Tails())
    cache.remember(old)
    fresh = MutableState(namespace="ns", workflow_id="wf", run_id="new")
    assert not fresh.running
    cache.remember(fresh)
    assert cache.current[("ns", "wf")] == old.run_id  # any run: only a running one takes over
    cache.remember(fresh, current=True)
    assert cache.current[("ns", "wf")] == "new"


async def test_current_runs_are_looked_up_once_per_batch_and_a_start_is_assumed_new() -> None:
    known = await _state("known")
    store = Store(known)
    cache = RunCache(store, 0, Tails())
    start = _record("StartWorkflowExecution", "new", **_start("new").to_dict())
    signal = _record("SignalWorkflowExecution", "known", 1, namespace="ns", workflow_id="known", run_id=None,
                     signal_name="s", input="[]", request_id="r", identity="", reply_to=None)
    missing = _record("SignalWorkflowExecution", "gone", 2, namespace="ns", workflow_id="gone", run_id=None,
                      signal_name="s", input="[]", request_id="r2", identity="", reply_to=None)
    no_current, assumed_new = await cache.look_up_current([[start, signal, missing]])
    assert store.lookups == [[("ns", "gone"), ("ns", "known")]]  # the start costs no look-up
    assert cache.current[("ns", "known")] == known.run_id
    assert no_current == {("ns", "gone"), ("ns", "new")} and assumed_new == {("ns", "new")}
    # Run again without the assumption (the commit found the start's workflow had a run).
    _, assumed_new = await cache.look_up_current([[start]], assume_new=False)
    assert assumed_new == frozenset() and store.lookups[-1] == [("ns", "new")]


# ---- outbox relay ----------------------------------------------------------------------------

def _message(topic: str, n: int) -> OutboxMessage:
    return OutboxMessage(topic, b"k", str(n).encode())


async def test_the_relay_publishes_committed_rows_in_order_then_deletes_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    published = _published(monkeypatch, relay)
    store = Store()
    store.pending = [(4, _message(kafka.REPLIES, 0))]  # left by the previous owner
    r = OutboxRelay(0, store, None, outage.Backoff("relay", log))
    assert await r.recover() == 1 and r.next_outbox_id == 5 and r.backlog == 1

    @dataclasses.dataclass
    class Mut:
        outbox: tuple[OutboxMessage, ...]

    rows = r.number([Mut((_message(kafka.TASKS, 1),))], [_message(kafka.REPLIES, 2)])  # type: ignore[list-item]
    assert [i for i, _ in rows] == [5, 5] and r.next_outbox_id == 6
    r.not_committed(rows)  # the commit failed: the id is free again
    assert r.next_outbox_id == 5
    rows = r.number([Mut((_message(kafka.TASKS, 1),))], [_message(kafka.REPLIES, 2)])  # type: ignore[list-item]
    r.committed(rows)
    task = asyncio.create_task(r.run())
    try:
        await eventually(lambda: store.deleted, what="the published rows deleted")
        assert [v for _, _, v, _ in published] == [b"0", b"1", b"2"]
        assert store.deleted[-1] == 5 and r.backlog == 0
    finally:
        task.cancel()


async def test_records_for_the_audit_log_alone_wait_a_little_to_go_together(monkeypatch: pytest.MonkeyPatch) -> None:
    requests: list[list[Any]] = []

    async def publish(producer: Any, records: Any) -> None:
        requests.append(list(records))

    monkeypatch.setattr(kafka, "publish", publish)
    monkeypatch.setattr(relay, "AUDIT_GATHER_S", 5.0)
    r = OutboxRelay(0, Store(), None, outage.Backoff("relay", log))
    task = asyncio.create_task(r.run())
    try:
        r.committed([(1, _message(kafka.HISTORY, 1))])
        await stays(lambda: requests == [], for_seconds=0.05, what="gathering")
        r.committed([(2, _message(kafka.REPLIES, 2))])  # someone waits for this one: no more waiting
        await eventually(lambda: requests, what="one produce request")
        assert [v for _, _, v, _ in requests[0]] == [b"1", b"2"]
    finally:
        task.cancel()


class TasksTold:
    """Commit notices that tell tasks (as MatchingNotices does)."""

    def __init__(self) -> None:
        self.told: list[bytes] = []

    def covers(self, topic: str, key: bytes | None) -> bool:
        return topic == kafka.TASKS

    def committed(self, records: Any, updates: Any = None) -> None:
        self.told.extend(v for _, _, v, _ in records)

    async def close(self) -> None:
        pass


async def test_records_told_at_the_commit_wait_a_little_to_go_together(monkeypatch: pytest.MonkeyPatch) -> None:
    # Between processes a task told to matching at its commit is published only as the
    # fallback: like the audit log's records, it goes with the next ones.
    requests: list[list[Any]] = []

    async def publish(producer: Any, records: Any) -> None:
        requests.append(list(records))

    monkeypatch.setattr(kafka, "publish", publish)
    monkeypatch.setattr(relay, "AUDIT_GATHER_S", 5.0)
    told = TasksTold()
    r = OutboxRelay(0, Store(), None, outage.Backoff("relay", log), at_commit=told)
    task = asyncio.create_task(r.run())
    try:
        r.committed([(1, _message(kafka.HISTORY, 1)), (1, _message(kafka.TASKS, 2))])
        assert told.told == [b"2"]  # told at once
        await stays(lambda: requests == [], for_seconds=0.05, what="gathering")
        r.committed([(2, _message(kafka.REPLIES, 3))])  # nobody was told of this one: no more waiting
        await eventually(lambda: requests, what="one produce request")
        assert [v for _, _, v, _ in requests[0]] == [b"1", b"2", b"3"]
    finally:
        task.cancel()


# ---- timer queue -----------------------------------------------------------------------------

async def test_due_timers_go_to_the_intake_once_until_their_commit() -> None:
    fired: list[engine.TimerFiring] = []

    async def fire(firing: engine.TimerFiring) -> None:
        fired.append(firing)

    store = Store()
    store.timers = [{"timer_key": "run/timer/1", "fire_at": 0, "namespace": "default", "workflow_id": "wf",
                     "run_id": "run", "kind": "timer", "ref": 1, "attempt": 0}]
    timers = TimerQueue(0, store, fire, outage.Backoff("timers", log))
    task = asyncio.create_task(timers.run())
    try:
        await eventually(lambda: fired, what="the due timer fired")
        assert fired[0].key == "run/timer/1" and "run/timer/1" in timers.inflight
        await timers._reload(0)  # in flight: not queued again by a reload
        assert not timers.rows
        timers.give_back("run/timer/1")  # its batch was refused: loaded again later
        assert not timers.inflight
        timers.committed([], ["run/timer/1"])
        assert not timers.rows and len(fired) == 1
    finally:
        task.cancel()


# ---- re-dispatch -----------------------------------------------------------------------------

async def test_redispatch_publishes_unstarted_tasks_again_and_backs_off_per_task(
        monkeypatch: pytest.MonkeyPatch) -> None:
    published = _published(monkeypatch, redispatch)
    state = await _state()
    assert state.has_undispatched() or state.wt is not None
    store = Store(state)

    async def verify_owner() -> None:
        pass

    r = Redispatcher(0, None, store.load_state, outage.Backoff("redispatch", log), verify_owner)
    assert state.wt is not None
    state.wt.scheduled_time = int(time.time() * 1000)
    r.recover([state])
    assert state.run_id in r.unstarted
    assert await r.redispatch() == 0  # scheduled just now: not due yet
    assert await r.redispatch(force=True) == 1  # a new broker: every unstarted task again
    assert [t for t, _, _, _ in published] == [kafka.TASKS]
    assert await r.redispatch() == 0  # just sent: not due again before its wait


async def test_redispatch_sends_a_task_in_its_runs_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rebuilt from the state alone (a new owner after kill -9): it carries the run's trace
    context, not none (its worker's spans then started a trace of their own)."""
    published = _published(monkeypatch, redispatch)
    state = await _state()
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    state.trace_context = {"traceparent": parent}

    async def verify_owner() -> None:
        pass

    r = Redispatcher(0, None, Store(state).load_state, outage.Backoff("redispatch", log), verify_owner)
    r.recover([state])
    assert await r.redispatch(force=True) == 1
    assert [h for _, _, _, h in published] == [(("traceparent", parent.encode()),)]


async def test_redispatch_sends_a_task_unstarted_for_long_at_most_once_per_max_wait(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Its age passes REDISPATCH_MAX_MS for good: it was sent again on every pass (every 5 s)."""
    _published(monkeypatch, redispatch)  # kept, not sent: no broker here
    clock = _frozen_clock(monkeypatch)
    state = await _state()
    store = Store(state)

    async def verify_owner() -> None:
        pass

    r = Redispatcher(0, None, store.load_state, outage.Backoff("redispatch", log), verify_owner)
    assert state.wt is not None
    state.wt.scheduled_time = 0  # an hour before the clock: a queue no worker polls
    r.recover([state])
    sent_at: list[float] = []
    pass_s = redispatch.REDISPATCH_AFTER_MS / 2000
    for _ in range(int(3600 / pass_s)):  # an hour of passes
        if await r.redispatch():
            sent_at.append(clock[0])
        clock[0] += pass_s
    gaps = [b - a for a, b in itertools.pairwise(sent_at)]
    assert gaps[:5] == [20.0, 40.0, 80.0, 160.0, 300.0]  # the wait doubles from 10 s ...
    assert set(gaps[5:]) == {300.0}  # ... up to REDISPATCH_MAX_MS, never less
    assert len(sent_at) < 20


async def test_redispatch_leaves_a_task_waiting_in_matching_here_and_sends_it_once_let_go(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Handed over to matching in this process and waiting there for a poll, a task is not
    lost: its copy was built, produced and dropped by matching as a duplicate."""
    published = _published(monkeypatch, redispatch)
    clock = _frozen_clock(monkeypatch)
    state = await _state()
    assert state.wt is not None and not state.wt.started_event_id
    held = {f"{state.run_id}:wt:{state.wt.scheduled_event_id}:{state.wt.attempt}"}

    async def verify_owner() -> None:
        pass

    r = Redispatcher(0, None, Store(state).load_state, outage.Backoff("redispatch", log), verify_owner,
                     held=held.__contains__)
    state.wt.scheduled_time = int(clock[0] * 1000) - redispatch.REDISPATCH_AFTER_MS  # due now
    r.recover([state])
    assert await r.redispatch() == 0 and published == []  # matching here holds it
    assert await r.redispatch(force=True) == 1  # a new broker: every unstarted task, held or not
    held.clear()  # matching let it go (its partition moved) without a poll taking it
    clock[0] += redispatch.REDISPATCH_MAX_MS / 1000
    assert await r.redispatch() == 1
    assert [t for t, _, _, _ in published] == [kafka.TASKS, kafka.TASKS]
