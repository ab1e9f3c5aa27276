"""A task answer whose reply is lost (the frontend took it, then the connection dropped) or
that meets a frontend answering 503 is sent again by the worker: the workflow finishes at
once and the activity runs once, instead of a start-to-close timeout and a second run.
A small proxy between the worker and the real frontend does the losing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import aiohttp
import pytest
from aiohttp import web

from kadence import Client, Worker, activity, workflow
from kadence._http import HttpTransport
from services.cluster import Cluster

pytestmark = pytest.mark.timeout(90)

RUNS: list[str] = []


@activity.defn
async def count_run(value: str) -> str:
    RUNS.append(value)
    return value.upper()


@workflow.defn
class CountedOnce:
    @workflow.run
    async def run(self, value: str) -> str:
        return str(await workflow.execute_activity(count_run, value, start_to_close_timeout=timedelta(seconds=30)))


class LossyProxy:
    """Forwards to the frontend; the first activity completion is answered 503 without
    forwarding, the second is forwarded and its reply lost (the connection is closed)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.completions = 0
        self.session: aiohttp.ClientSession | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        assert self.session is not None
        body = await request.read()
        answer_path = request.path.endswith(("/activity-tasks/complete", "/task-answers"))
        if answer_path:
            self.completions += 1
            if self.completions == 1:
                return web.json_response({"error": "Unavailable", "message": "restarting"}, status=503)
        async with self.session.request(request.method, self.upstream + request.path_qs, data=body,
                                        headers={"Content-Type": "application/json"}) as upstream:
            payload = await upstream.read()
            status = upstream.status
        if answer_path and self.completions == 2:
            assert request.transport is not None
            request.transport.close()  # taken by the frontend, reply lost
            return web.Response()
        return web.Response(body=payload, status=status, content_type="application/json")


@pytest.fixture
async def proxy(cluster: Cluster) -> AsyncIterator[tuple[LossyProxy, str]]:
    lossy = LossyProxy(str(cluster.url).rstrip("/"))
    lossy.session = aiohttp.ClientSession()
    app = web.Application(client_max_size=2 << 20)
    app.router.add_route("*", "/{tail:.*}", lossy.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield lossy, f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
        await lossy.session.close()


async def test_a_lost_answer_is_sent_again_and_the_activity_runs_once(
        client: Client, proxy: tuple[LossyProxy, str]) -> None:
    lossy, url = proxy
    RUNS.clear()
    through_proxy = Client(HttpTransport(url, "default"))
    try:
        async with Worker(through_proxy, task_queue="q-lossy", workflows=[CountedOnce], activities=[count_run],
                          run_ahead=False, poll_wait_seconds=1):  # short polls: the proxy stops quickly
            handle = await client.start_workflow(CountedOnce.run, "hi", id=f"lossy-{uuid.uuid4().hex[:6]}",
                                                 task_queue="q-lossy")
            loop = asyncio.get_running_loop()
            began = loop.time()
            assert await handle.result(timeout=60) == "HI"
            took = loop.time() - began
    finally:
        await through_proxy.close()
    assert lossy.completions >= 3  # refused, taken with its reply lost, then a repeat history ignores
    assert RUNS == ["hi"]  # once: without the retry the activity would time out and run again
    assert took < 15, f"took {took:.1f}s"  # far below the 30 s start-to-close timeout
