"""An update asked again after its run continued as new runs once, as Temporal's: the
answer that names the run pins the handle's later asks to it, and history sends a re-ask
that reaches the new run (a handle on the chain, another client) to the run that took the
update, instead of running it again there."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from typing import Any

import pytest

from kadence import Client, Worker, workflow
from kadence._http import HttpTransport
from services.cluster import Cluster

from ..helpers import eventually


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    """This module's tests share one cluster (tests/e2e/conftest.py module_cluster)."""
    return module_cluster


pytestmark = pytest.mark.timeout(90)
QUEUE = "q-update-continued"


@workflow.defn
class Relay:
    """Run 0 holds its update's handler until released, lets it finish, and continues as new;
    run 1 answers the same update at once, so a second run of it would show its run id."""

    def __init__(self) -> None:
        self.released = False

    @workflow.run
    async def run(self, hop: int) -> None:
        if hop == 0:
            await workflow.wait_condition(lambda: self.released)
            await workflow.wait_condition(workflow.all_handlers_finished)
            workflow.continue_as_new(1)
        await workflow.wait_condition(lambda: False)

    @workflow.update
    async def stamp(self, note: str) -> str:
        await workflow.wait_condition(lambda: self.released or workflow.info().continued_run_id is not None)
        return f"{note}@{workflow.info().run_id}"

    @workflow.signal
    def release(self) -> None:
        self.released = True


async def _accepted(client: Client, wid: str, run_id: str | None, update_id: str) -> int:
    events = await client.get_workflow_handle(wid, run_id=run_id).history()
    return sum(1 for e in events if e["event_type"] == "WorkflowExecutionUpdateAccepted"
               and e["attributes"]["update_id"] == update_id)


async def _continue(client: Client, wid: str, first: str) -> str:
    """Release run 0 and return the run it continued as."""
    await client.get_workflow_handle(wid).signal(Relay.release)

    async def current() -> str:
        run_id = str((await client.get_workflow_handle(wid).describe())["run_id"])
        return run_id if run_id != first else ""

    return await eventually(current, timeout=20, what="the continued run")


class HeldAsks:
    """The client's transport, whose update asks can be held back (``held``) until let go."""

    def __init__(self, url: str) -> None:
        self.http = HttpTransport(url, "default")
        self.open = asyncio.Event()
        self.open.set()
        self.waiting = 0  # asks held back now
        self.answers: list[Mapping[str, Any]] = []

    async def call(self, method: str, path: str, *, body: Mapping[str, Any] | None = None,
                   params: Mapping[str, Any] | None = None, timeout: float | None = None) -> dict[str, Any]:
        if not path.endswith("/update"):
            return await self.http.call(method, path, body=body, params=params, timeout=timeout)
        self.waiting += 1
        await self.open.wait()
        self.waiting -= 1
        answer = await self.http.call(method, path, body=body, params=params, timeout=timeout)
        self.answers.append(answer)
        return answer

    async def close(self) -> None:
        await self.http.close()


async def test_an_update_whose_wait_ran_out_is_asked_again_after_continue_as_new_and_runs_once(
        cluster: Cluster) -> None:
    # A 1 s long poll: the wait for the outcome runs out while the handler waits, and the
    # client asks again; that ask is held until the run has continued as new.
    transport = HeldAsks(cluster.url)
    client = Client(transport, long_poll_seconds=1.0)
    wid, uid = f"relay-{uuid.uuid4().hex[:8]}", f"u-{uuid.uuid4().hex[:8]}"
    try:
        async with Worker(client, task_queue=QUEUE, workflows=[Relay]):
            handle = await client.start_workflow(Relay.run, 0, id=wid, task_queue=QUEUE)
            first = str(handle.run_id)
            running = asyncio.create_task(handle.execute_update(Relay.stamp, "a", id=uid, timeout=60))
            accepted: int = await eventually(lambda: _accepted(client, wid, first, uid), timeout=20,
                                             what="the update accepted")
            assert accepted == 1
            transport.open.clear()
            await eventually(lambda: transport.waiting, timeout=20, what="an ask after a wait that ran out")
            assert transport.answers and transport.answers[-1]["stage"] == "requested"
            second = await _continue(client, wid, first)
            transport.open.set()

            assert await running == f"a@{first}"
            assert await _accepted(client, wid, second, uid) == 0
            await handle.terminate("done")
    finally:
        transport.open.set()
        await client.close()


async def test_an_update_waited_for_after_continue_as_new_runs_once(cluster: Cluster) -> None:
    # A short long poll: the wait for the outcome runs out and asks again while it runs.
    client = await Client.connect(cluster.url, long_poll_seconds=1.0)
    wid, uid = f"relay-{uuid.uuid4().hex[:8]}", f"u-{uuid.uuid4().hex[:8]}"
    try:
        async with Worker(client, task_queue=QUEUE, workflows=[Relay]):
            handle = await client.start_workflow(Relay.run, 0, id=wid, task_queue=QUEUE)
            first = str(handle.run_id)
            accepted = await handle.start_update(Relay.stamp, "a", id=uid)
            second = await _continue(client, wid, first)

            # The accepted answer named run 0: the handle waits there, where the update ran.
            assert await accepted.result(timeout=30) == f"a@{first}"
            assert await _accepted(client, wid, second, uid) == 0
            await handle.terminate("done")
    finally:
        await client.close()


async def test_an_update_id_asked_of_the_continued_run_answers_the_earlier_run(client: Client) -> None:
    wid, uid = f"relay-{uuid.uuid4().hex[:8]}", f"u-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=QUEUE, workflows=[Relay]):
        handle = await client.start_workflow(Relay.run, 0, id=wid, task_queue=QUEUE)
        first = str(handle.run_id)
        await handle.start_update(Relay.stamp, "a", id=uid)
        second = await _continue(client, wid, first)
        assert await _accepted(client, wid, first, uid) == 1  # start_update returned once it was accepted

        # A new ask with the same id, not pinned to a run, reaches run 1: history sends it to
        # run 0, which took the update, and it is not run again.
        chain = client.get_workflow_handle(wid)
        assert await chain.execute_update(Relay.stamp, "a", id=uid, timeout=30) == f"a@{first}"
        assert await chain.get_update_handle(uid, result_type=str).result(timeout=30) == f"a@{first}"
        assert await _accepted(client, wid, second, uid) == 0
        # An update id new to the chain still runs in the current run.
        assert await chain.execute_update(Relay.stamp, "b", timeout=30) == f"b@{second}"
        await handle.terminate("done")
