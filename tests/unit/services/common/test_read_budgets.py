"""Shares of the frontend's pool by kind of read (services/common/read_budgets.py), without
I/O: a kind holds at most its share and the reads together leave a reserve; a waiter is
served when a slot frees, within its bound, in turn by namespace; a command's read takes no
slot; a read that gives up says which share was full."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint

from services.common import telemetry
from services.common.read_budgets import (
    BudgetExhausted,
    FairSlots,
    ReadBudgets,
    Reading,
    ReadKind,
    current_reading,
    done_reading,
    reading_as,
    reads_share,
)

pytestmark = pytest.mark.timeout(10)

HISTORY, RESULTS, LOOKUPS = Reading(ReadKind.HISTORY, "noisy"), Reading(ReadKind.RESULTS), Reading(ReadKind.LOOKUPS)


def test_the_reads_leave_a_reserve_of_the_pool() -> None:
    assert [reads_share(n) for n in (1, 2, 4, 10, 12, 40)] == [1, 1, 3, 8, 9, 30]
    budgets = ReadBudgets(12)
    assert (budgets.share, budgets.per_kind) == (9, 8)


async def test_a_kind_holds_at_most_its_share_and_leaves_the_others_theirs() -> None:
    budgets = ReadBudgets(12)
    for _ in range(8):
        assert await budgets.take(HISTORY, 1.0)
    with pytest.raises(BudgetExhausted) as caught:
        await budgets.take(HISTORY, 0.05)
    assert caught.value.kind is ReadKind.HISTORY and caught.value.slots == 8
    assert "history reads may hold 8 of the frontend's 12 connections" in str(caught.value)
    # Another kind finds the last slot of the reads' share (9) at once; then it is full.
    assert await asyncio.wait_for(budgets.take(LOOKUPS, 1.0), 0.05)
    with pytest.raises(BudgetExhausted, match="reads may hold 9 of the frontend's 12"):
        await budgets.take(RESULTS, 0.05)
    assert budgets.in_use(ReadKind.RESULTS) == 0  # the one that gave up gave its kind's slot back


async def test_the_reads_share_is_served_in_turn_by_kind() -> None:
    budgets = ReadBudgets(4)  # 3 for reads, 2 a kind
    for _ in range(2):
        assert await budgets.take(HISTORY, 1.0)
    assert await budgets.take(RESULTS, 1.0)
    queued = [asyncio.ensure_future(budgets.take(r, 5.0)) for r in (RESULTS, LOOKUPS)]
    await asyncio.sleep(0.01)
    budgets.give(RESULTS)  # the first result wait queued takes it: it asked first
    await asyncio.wait_for(queued[0], 0.5)
    budgets.give(HISTORY)
    await asyncio.wait_for(queued[1], 0.5)


async def test_a_commands_read_takes_no_slot() -> None:
    budgets = ReadBudgets(2)
    assert await budgets.take(HISTORY, 1.0)
    assert await asyncio.wait_for(budgets.take(Reading(ReadKind.COMMANDS), 1.0), 0.05) is False


async def test_a_waiting_read_is_served_when_a_slot_frees_within_its_bound() -> None:
    budgets = ReadBudgets(2)
    assert await budgets.take(HISTORY, 1.0)
    waiting = asyncio.ensure_future(budgets.take(HISTORY, 1.0))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    budgets.give(HISTORY)
    assert await asyncio.wait_for(waiting, 0.5)


async def test_waiters_are_served_in_turn_by_namespace() -> None:
    slots = FairSlots(1)
    await slots.take("noisy", 1.0)
    served: list[str] = []

    async def wait(key: str) -> None:
        await slots.take(key, 5.0)
        served.append(key)

    waiters = [asyncio.ensure_future(wait(k)) for k in ["noisy"] * 4 + ["quiet", "other"]]
    await asyncio.sleep(0.01)
    for _ in waiters:
        slots.give()
        await asyncio.sleep(0)
    await asyncio.gather(*waiters)
    assert served == ["noisy", "quiet", "other", "noisy", "noisy", "noisy"]


async def test_a_waiter_that_gives_up_leaves_the_queue_and_a_slot_handed_as_it_gives_up_passes_on() -> None:
    slots = FairSlots(1)
    await slots.take("a", 1.0)
    with pytest.raises(TimeoutError):
        await slots.take("a", 0.01)
    assert slots.waiting == 0
    late = asyncio.ensure_future(slots.take("b", 5.0))
    after = asyncio.ensure_future(slots.take("c", 5.0))
    await asyncio.sleep(0.01)
    slots.give()  # handed to b, which is cancelled before it runs: the slot goes on to c
    late.cancel()
    await asyncio.wait_for(after, 0.5)
    with pytest.raises(asyncio.CancelledError):
        await late
    assert (slots.in_use, slots.waiting) == (1, 0)


async def test_a_calls_reads_are_of_its_kind_until_it_ends() -> None:
    assert current_reading() == Reading(ReadKind.LOOKUPS)  # outside any call
    token = reading_as(ReadKind.HISTORY, "noisy")
    assert current_reading() == HISTORY
    done_reading(token)
    assert current_reading().kind is ReadKind.LOOKUPS


def _points(reader: InMemoryMetricReader) -> dict[tuple[str, tuple[tuple[str, Any], ...]], float]:
    """Each data point read: (metric name, its attributes sorted) -> value."""
    data = reader.get_metrics_data()
    assert data is not None
    return {(m.name, tuple(sorted((p.attributes or {}).items()))): p.value
            for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
            for p in m.data.data_points if isinstance(p, NumberDataPoint)}


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    # The gauges sum every ReadBudgets alive in the process: the earlier tests' are let go
    # first (an exception caught in a test keeps its frame, and so its budgets, in a cycle).
    gc.collect()
    reader = InMemoryMetricReader()
    telemetry.configure(meter_provider=MeterProvider(metric_readers=[reader]))
    try:
        yield reader
    finally:
        telemetry.configure(meter_provider=None)


async def test_the_shares_count_their_waits_and_give_ups_and_show_what_is_in_use(
        reader: InMemoryMetricReader) -> None:
    budgets = ReadBudgets(4)  # 3 for reads, 2 a kind
    for _ in range(2):
        assert await budgets.take(HISTORY, 1.0)  # free slots: no wait counted
    with pytest.raises(BudgetExhausted):
        await budgets.take(HISTORY, 0.01)  # its kind's share full
    assert await budgets.take(RESULTS, 1.0)
    with pytest.raises(BudgetExhausted):
        await budgets.take(LOOKUPS, 0.01)  # its kind has room, the reads' share not
    waiting = asyncio.ensure_future(budgets.take(RESULTS, 5.0))
    await asyncio.sleep(0.01)
    points = _points(reader)

    def point(name: str, **attributes: str) -> float:
        return points.get((f"kadence.frontend.reads.{name}", tuple(sorted(attributes.items()))), 0)

    assert point("in_use", **{"kadence.read_share": "history_reads"}) == 2
    assert point("in_use", **{"kadence.read_share": "result_reads"}) == 2  # the waiter holds its kind's slot
    assert point("in_use", **{"kadence.read_share": "all_reads"}) == 3
    assert point("waiting", **{"kadence.read_share": "all_reads"}) == 1
    assert point("waiting", **{"kadence.read_share": "history_reads"}) == 0
    budgets.give(HISTORY)
    assert await asyncio.wait_for(waiting, 0.5)
    points = _points(reader)
    assert point("waited", **{"kadence.read_kind": "history_reads"}) == 1
    assert point("waited", **{"kadence.read_kind": "lookup_reads"}) == 1
    assert point("waited", **{"kadence.read_kind": "result_reads"}) == 1
    assert point("gave_up", **{"kadence.read_kind": "history_reads", "kadence.read_share": "history_reads"}) == 1
    assert point("gave_up", **{"kadence.read_kind": "lookup_reads", "kadence.read_share": "all_reads"}) == 1
    assert point("waiting", **{"kadence.read_share": "all_reads"}) == 0
