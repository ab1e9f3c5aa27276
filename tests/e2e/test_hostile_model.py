"""The programming model's guarantees while processes die and messages repeat, as a Temporal
user with a fault script would try them: an update's caller while its worker and frontend go
away, cancel racing completion, a repeated signal-with-start, continue-as-new under a stream
of signals. Real broker and PostgreSQL (the Cluster fixture)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from kadence import Client, Worker, workflow
from services.cluster import Cluster

pytestmark = pytest.mark.timeout(90)


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@workflow.defn
class Held:
    """An update whose handler waits for a signal that never comes: accepted, never completed."""

    def __init__(self) -> None:
        self.go = False

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)

    @workflow.update
    async def hold(self) -> str:
        await workflow.wait_condition(lambda: self.go)
        return "done"

    @workflow.signal
    def release(self) -> None:
        self.go = True


async def test_an_update_wait_ends_at_its_timeout_when_the_worker_and_the_frontend_are_gone(
        cluster: Cluster, client: Client) -> None:
    """The update is accepted, its worker goes away before completing it, and the frontend
    stops: the caller's wait with a timeout ends with TimeoutError at that timeout, not after
    the client's 30 s of retrying an unreachable frontend."""
    wid, queue = _id("held-update"), _id("q-held")
    async with Worker(client, task_queue=queue, workflows=[Held]):
        handle = await client.start_workflow(Held.run, id=wid, task_queue=queue)
        update = await handle.start_update(Held.hold, id="u-1", wait_for_stage="accepted", timeout=20)
    await cluster.frontend.stop()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(update.result(timeout=2), 10)
    assert loop.time() - started < 6, f"the wait ran {loop.time() - started:.1f} s past a 2 s timeout"
    started = loop.time()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(handle.execute_update(Held.hold, id="u-2", timeout=2), 10)
    assert loop.time() - started < 6, f"the wait ran {loop.time() - started:.1f} s past a 2 s timeout"
