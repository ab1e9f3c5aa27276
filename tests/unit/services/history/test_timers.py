"""The timer queue's bookkeeping (services/history/timers.py): rows queued, rows in flight and
their index by run, as commits add, re-arm and delete timers and runs close."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any, cast

import pytest

from services.common import outage
from services.history import engine
from services.history.builder import Mutation, TimerRow, timer_key
from services.history.timers import TimerQueue

pytestmark = pytest.mark.timeout(15)
log = logging.getLogger(__name__)


class Store:
    def __init__(self) -> None:
        self.timers: dict[str, dict[str, Any]] = {}

    def arm(self, run_id: str, ref: int, fire_at: int) -> str:
        key = timer_key(run_id, "timer", ref)
        self.timers[key] = {"timer_key": key, "fire_at": fire_at, "namespace": "default", "workflow_id": run_id,
                            "run_id": run_id, "kind": "timer", "ref": ref, "attempt": 0}
        return key

    async def timers_before(self, shard_id: int, until: int) -> list[dict[str, Any]]:
        return sorted((t for t in self.timers.values() if t["fire_at"] <= until), key=lambda t: t["fire_at"])


def _row(run_id: str, ref: int, fire_at: int) -> TimerRow:
    return (timer_key(run_id, "timer", ref), fire_at, "default", run_id, run_id, "timer", ref, 0)


def _mutation(run_id: str, *, upsert: tuple[TimerRow, ...] = (), delete: tuple[str, ...] = (),
              close: bool = False) -> Mutation:
    state = cast(Any, SimpleNamespace(run_id=run_id))  # the queue reads the run id only
    return Mutation(state=state, events=(), encoded_events=(), outbox=(), local_tasks=(), timers_upsert=upsert,
                    timers_delete=delete, delete_all_timers=close, closed=close, current_changed=False)


def _queue(store: Store) -> TimerQueue:
    async def fire(firing: engine.TimerFiring) -> None:
        raise AssertionError("the tests take due rows with next_due")

    return TimerQueue(0, store, fire, outage.Backoff("timers", log))


def _due(queue: TimerQueue, now: int) -> list[str]:
    keys = []
    while (firing := queue.next_due(now)) is not None:
        keys.append(firing.key)
    return keys


def _consistent(queue: TimerQueue) -> None:
    """The index by run holds exactly the keys queued or in flight, under their runs."""
    expected: dict[str, set[str]] = {}
    for key, firing in queue.rows.items():
        expected.setdefault(firing.run_id, set()).add(key)
    for key, firing in queue.inflight.items():
        expected.setdefault(firing.run_id, set()).add(key)
    assert queue.by_run == expected
    assert not set(queue.rows) & set(queue.inflight)


async def test_a_closing_run_forgets_its_own_timers_queued_and_in_flight_only() -> None:
    store = Store()
    for run in ("a", "b"):
        for ref in range(3):
            store.arm(run, ref, fire_at=ref * 10)
    queue = _queue(store)
    await queue._reload(0)
    assert _due(queue, 10) == ["a/timer/0", "b/timer/0", "a/timer/1", "b/timer/1"]  # in flight now
    _consistent(queue)
    queue.committed([_mutation("a", close=True)], [])
    assert "a" not in queue.by_run
    assert set(queue.rows) == {"b/timer/2"} and set(queue.inflight) == {"b/timer/0", "b/timer/1"}
    _consistent(queue)
    # The closed run's in-flight firing commits later (its row deleted with it): nothing left to forget.
    queue.committed([], ["a/timer/0"])
    assert _due(queue, 100) == ["b/timer/2"]
    _consistent(queue)


async def test_closing_many_runs_leaves_no_index_behind() -> None:
    store = Store()
    for run in range(500):
        for ref in range(2):
            store.arm(f"r{run}", ref, fire_at=ref)
    queue = _queue(store)
    await queue._reload(0)
    _due(queue, 0)  # every run's first timer in flight, the second queued
    queue.committed([_mutation(f"r{run}", close=True) for run in range(500)], [])
    assert not queue.rows and not queue.inflight and not queue.by_run
    assert _due(queue, 10) == []  # the heap's entries of closed runs are skipped


async def test_a_timer_re_armed_past_the_window_does_not_fire_at_its_old_time() -> None:
    store = Store()
    key = store.arm("a", 1, fire_at=100)
    queue = _queue(store)
    await queue._reload(0)
    far = queue.horizon + 1_000
    store.timers[key]["fire_at"] = far
    queue.committed([_mutation("a", upsert=(_row("a", 1, far),))], [])
    assert _due(queue, 200) == []  # its old time: the row now says later
    _consistent(queue)
    await queue._reload(far)
    assert _due(queue, far) == [key]
    _consistent(queue)


async def test_a_timer_re_armed_within_the_window_fires_once_at_its_new_time() -> None:
    store = Store()
    key = store.arm("a", 1, fire_at=100)
    queue = _queue(store)
    await queue._reload(0)
    queue.committed([_mutation("a", upsert=(_row("a", 1, 300),))], [])
    assert _due(queue, 200) == []
    assert _due(queue, 300) == [key]
    assert _due(queue, 400) == []
    _consistent(queue)


async def test_a_timer_re_armed_while_in_flight_is_queued_again() -> None:
    store = Store()
    key = store.arm("a", 1, fire_at=100)
    queue = _queue(store)
    await queue._reload(0)
    assert _due(queue, 100) == [key]
    queue.committed([_mutation("a", upsert=(_row("a", 1, 200),))], [])
    assert key not in queue.inflight and queue.rows[key].fire_at == 200
    _consistent(queue)
    assert _due(queue, 200) == [key]
    _consistent(queue)


async def test_a_firing_given_back_is_loaded_again_and_fires_again() -> None:
    store = Store()
    key = store.arm("a", 1, fire_at=100)
    queue = _queue(store)
    await queue._reload(0)
    assert _due(queue, 100) == [key]
    await queue._reload(100)  # in flight: a reload does not queue it twice
    assert _due(queue, 100) == []
    queue.give_back(key)  # its batch was refused: the row stays in the store
    assert not queue.inflight and not queue.by_run
    await queue._reload(100)
    assert _due(queue, 100) == [key]
    queue.committed([], [key])  # fired and committed this time
    assert not queue.rows and not queue.inflight and not queue.by_run


async def test_a_give_back_after_a_close_leaves_nothing_behind() -> None:
    store = Store()
    key = store.arm("a", 1, fire_at=100)
    queue = _queue(store)
    await queue._reload(0)
    assert _due(queue, 100) == [key]
    queue.committed([_mutation("a", close=True)], [])
    queue.give_back(key)
    assert not queue.rows and not queue.inflight and not queue.by_run


async def test_a_firing_handed_over_before_its_key_was_re_armed_is_no_longer_current() -> None:
    # Firing it would delete the re-armed row by its key: the timer would be lost.
    store = Store()
    key = store.arm("a", 1, fire_at=10)
    queue = _queue(store)
    await queue._reload(0)
    stale = queue.next_due(10)
    assert stale is not None and queue.current(stale)
    queue.committed([_mutation("a", upsert=(_row("a", 1, 5_000),))], [])  # re-armed meanwhile
    assert not queue.current(stale)
    assert queue.rows[key].fire_at == 5_000
    _consistent(queue)
    again = queue.next_due(5_000)
    assert again is not None and again is not stale and queue.current(again)


async def test_a_firing_whose_row_a_commit_deleted_is_no_longer_current() -> None:
    store = Store()
    key = store.arm("a", 1, fire_at=10)
    queue = _queue(store)
    await queue._reload(0)
    firing = queue.next_due(10)
    assert firing is not None
    queue.committed([_mutation("a", delete=(key,))], [])
    assert not queue.current(firing)
    _consistent(queue)
