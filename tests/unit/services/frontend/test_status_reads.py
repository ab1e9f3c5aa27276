"""Status reads made at once share a query (services/frontend/status_reads.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from services.frontend.status_reads import RunKey, StatusReads
from tests.helpers import eventually

pytestmark = pytest.mark.timeout(15)


class Fetches:
    def __init__(self, statuses: dict[RunKey, str]) -> None:
        self.statuses = statuses
        self.calls: list[list[RunKey]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.error: Exception | None = None

    async def __call__(self, keys: Sequence[RunKey]) -> dict[RunKey, str]:
        self.calls.append(list(keys))
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        return {k: self.statuses[k] for k in keys if k in self.statuses}


def _key(i: int) -> RunKey:
    return ("ns", f"wf-{i}", f"run-{i}")


async def test_reads_made_at_once_share_one_query_and_each_gets_its_own_status() -> None:
    fetch = Fetches({_key(i): "Running" if i % 2 else "Completed" for i in range(100)})
    reads = StatusReads(fetch)
    got = await asyncio.gather(*(reads.status(*_key(i)) for i in range(101)))  # run 100 does not exist
    assert got == ["Running" if i % 2 else "Completed" for i in range(100)] + [None]
    assert len(fetch.calls) == 1 and len(fetch.calls[0]) == 101


async def test_reads_arriving_while_a_query_is_out_go_in_the_next_bounded_by_the_batch_size() -> None:
    fetch = Fetches({_key(i): "Running" for i in range(30)})
    fetch.gate.clear()
    reads = StatusReads(fetch, max_batch=10)
    first = asyncio.ensure_future(reads.status(*_key(0)))
    await eventually(lambda: fetch.calls, what="the first query out")
    later = [asyncio.ensure_future(reads.status(*_key(i))) for i in range(1, 30)]
    await asyncio.sleep(0)
    assert len(fetch.calls) == 1  # the later reads wait for the query that is out
    fetch.gate.set()
    assert await asyncio.gather(first, *later) == ["Running"] * 30
    assert [len(c) for c in fetch.calls] == [1, 10, 10, 9]
    # The same run read twice at once is asked for once.
    await asyncio.gather(reads.status(*_key(1)), reads.status(*_key(1)))
    assert fetch.calls[-1] == [_key(1)]


async def test_a_failed_query_fails_each_read_in_it_and_the_next_reads_are_served() -> None:
    fetch = Fetches({_key(0): "Running"})
    fetch.error = ConnectionError("database away")
    reads = StatusReads(fetch)
    got = await asyncio.gather(reads.status(*_key(0)), reads.status(*_key(1)), return_exceptions=True)
    assert all(isinstance(g, ConnectionError) for g in got)
    fetch.error = None
    assert await reads.status(*_key(0)) == "Running"


async def test_a_read_whose_caller_went_away_does_not_hold_up_the_others() -> None:
    fetch = Fetches({_key(0): "Running", _key(1): "Completed"})
    fetch.gate.clear()
    reads = StatusReads(fetch)
    out = asyncio.ensure_future(reads.status(*_key(0)))
    await eventually(lambda: fetch.calls, what="the first query out")
    gone = asyncio.ensure_future(reads.status(*_key(0)))
    kept = asyncio.ensure_future(reads.status(*_key(1)))
    await asyncio.sleep(0)
    gone.cancel()
    fetch.gate.set()
    assert await out == "Running" and await kept == "Completed"
    assert fetch.calls[1] == [_key(1)]
