"""A streamed answer (app.py ``_stream``): one JSON document written an item a line as items are
ready (those ready together in one write); a failure mid-way cuts it short (no closing line)
so the reader can tell, and a reader that goes away stops the calls still running."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.frontend.app import _stream
from services.frontend.handlers import Streamed

pytestmark = pytest.mark.timeout(30)


async def _serve(items: AsyncGenerator[list[dict[str, Any]], None]) -> TestClient:  # type: ignore[type-arg]
    async def handle(request: web.Request) -> web.StreamResponse:
        return await _stream(request, 200, Streamed("results", items))

    app = web.Application()
    app.router.add_post("/", handle)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_items_are_written_as_they_come_and_make_one_document() -> None:
    gate = asyncio.Event()

    async def items() -> AsyncGenerator[list[dict[str, Any]], None]:
        yield [{"index": 1}]
        await gate.wait()
        yield [{"index": 0}, {"index": 2}]

    client = await _serve(items())
    try:
        resp = await client.post("/")
        first = await resp.content.readline()
        assert first == b'{"results":[\n'
        assert await resp.content.readline() == b'{"index":1}\n'  # before the second is ready
        gate.set()
        rest = await resp.read()
        assert rest == b',{"index":0}\n,{"index":2}\n]}\n'  # a group: one line per item
        assert json.loads(first + b'{"index":1}\n' + rest) == {"results": [{"index": 1}, {"index": 0}, {"index": 2}]}
    finally:
        await client.close()


async def test_a_failure_mid_way_cuts_the_answer_short() -> None:
    async def items() -> AsyncGenerator[list[dict[str, Any]], None]:
        yield [{"index": 0}]
        raise RuntimeError("the broker went away")

    client = await _serve(items())
    try:
        resp = await client.post("/")
        assert resp.status == 200
        raw = b""
        try:
            raw = await resp.read()
        except Exception:  # noqa: BLE001 -- a cut chunked body may also read as a payload error
            pass
        assert b"]}" not in raw
    finally:
        await client.close()


async def test_a_reader_that_goes_away_stops_the_calls_still_running() -> None:
    stopped = asyncio.Event()

    async def items() -> AsyncGenerator[list[dict[str, Any]], None]:
        try:
            yield [{"index": 0}]
            await asyncio.sleep(30)
            yield [{"index": 1}]
        finally:
            stopped.set()

    client = await _serve(items())
    try:
        resp = await client.post("/")
        assert await resp.content.readline() == b'{"results":[\n'
        assert await resp.content.readline() == b'{"index":0}\n'
        resp.close()  # the caller goes away
        await asyncio.wait_for(stopped.wait(), 10)
    finally:
        await client.close()


async def test_start_batch_items_come_in_the_order_they_finish_and_stop_with_the_reader() -> None:
    from services.frontend.handlers import _as_ready

    cancelled: list[int] = []

    async def call(index: int, delay: float) -> dict[str, Any]:
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            cancelled.append(index)
            raise
        return {"index": index}

    results = _as_ready(call, [0.2, 0.0, 30.0])
    assert await results.__anext__() == [{"index": 1}]
    assert await results.__anext__() == [{"index": 0}]
    await results.aclose()  # the reader went away while item 2 runs
    await asyncio.sleep(0)
    assert cancelled == [2]


async def test_results_that_finish_together_come_as_one_group() -> None:
    """Result waits woken by one commit finish in the same loop turn: one group, one write
    (not one write per item, which cost a write per workflow with 10,000 in flight)."""
    from services.frontend.handlers import _as_ready

    done = asyncio.Event()

    async def call(index: int, together: bool) -> dict[str, Any]:
        if together:
            await done.wait()
        return {"index": index}

    results = _as_ready(call, [True, False, True, True])
    assert await results.__anext__() == [{"index": 1}]
    done.set()
    group = await results.__anext__()
    assert sorted(r["index"] for r in group) == [0, 2, 3]
    with pytest.raises(StopAsyncIteration):
        await results.__anext__()
