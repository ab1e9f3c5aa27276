"""An update asked again by its id runs once per chain: across two continue-as-new hops (each
hop carries the ids to the next run, and a re-ask goes back to the run that took it), and
after a reset (the new run knows what the base run took before the reset point and what
the runs before it took). A wait by id alone (get_update_handle) that reaches a run before
the update itself is refused UpdateNotFound without taking the id: the update, sent after,
still runs (it was refused for good before)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from kadence import Client, ResetPoint, Worker, WorkflowUpdateFailedError, workflow
from services.cluster import Cluster

from ..helpers import eventually

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    """This module's tests share one cluster (tests/e2e/conftest.py module_cluster): each uses its
    own workflow ids and task queue (conftest's ``queue``), and none stops, breaks or patches a service."""
    return module_cluster


@workflow.defn
class Hopper:
    def __init__(self) -> None:
        self.go = False

    @workflow.run
    async def run(self, hop: int) -> None:
        await workflow.wait_condition(lambda: self.go)
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(hop + 1)

    @workflow.update
    async def stamp(self, note: str) -> str:
        return f"{note}@{workflow.info().run_id}"

    @workflow.signal
    def hop(self) -> None:
        self.go = True


async def _hop(client: Client, wid: str) -> str:
    before = str((await client.get_workflow_handle(wid).describe())["run_id"])
    await client.get_workflow_handle(wid).signal(Hopper.hop)

    async def current() -> str:
        run_id = str((await client.get_workflow_handle(wid).describe())["run_id"])
        return run_id if run_id != before else ""

    return await eventually(current, timeout=20, what="the continued run")


async def _accepted(client: Client, wid: str, run_id: str) -> list[str]:
    return [e["attributes"]["update_id"] for e in await client.get_workflow_handle(wid, run_id=run_id).history()
            if e["event_type"] == "WorkflowExecutionUpdateAccepted"]


async def test_an_update_asked_again_two_hops_later_runs_once(client: Client, queue: str) -> None:
    wid = f"hopper-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[Hopper]):
        handle = await client.start_workflow(Hopper.run, 0, id=wid, task_queue=queue)
        run0 = str(handle.run_id)
        chain = client.get_workflow_handle(wid)
        assert await chain.execute_update(Hopper.stamp, "a", id="u1") == f"a@{run0}"
        run1 = await _hop(client, wid)
        assert await chain.execute_update(Hopper.stamp, "b", id="u2") == f"b@{run1}"
        run2 = await _hop(client, wid)
        run3 = await _hop(client, wid)
        for uid, note, run in (("u1", "a", run0), ("u2", "b", run1)):
            assert await chain.execute_update(Hopper.stamp, note, id=uid, timeout=30) == f"{note}@{run}"
            assert await chain.get_update_handle(uid, result_type=str).result(timeout=30) == f"{note}@{run}"
            pinned = client.get_workflow_handle(wid, run_id=run3)
            assert await pinned.execute_update(Hopper.stamp, note, id=uid, timeout=30) == f"{note}@{run}"
        for run in (run2, run3):
            assert await _accepted(client, wid, run) == []
        assert await _accepted(client, wid, run0) == ["u1"] and await _accepted(client, wid, run1) == ["u2"]
        await chain.terminate("done")


async def test_an_update_asked_again_after_reset(client: Client, queue: str) -> None:
    wid = f"hopper-r-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[Hopper]):
        handle = await client.start_workflow(Hopper.run, 0, id=wid, task_queue=queue)
        run0 = str(handle.run_id)
        chain = client.get_workflow_handle(wid)
        assert await chain.execute_update(Hopper.stamp, "a", id="u1") == f"a@{run0}"
        run1 = await _hop(client, wid)
        assert await chain.execute_update(Hopper.stamp, "b", id="u2") == f"b@{run1}"
        reset = await client.get_workflow_handle(wid, run_id=run1).reset(ResetPoint.FIRST, reason="test")
        new = str(reset.run_id)
        # u1 was taken by run 0, which the reset run 1 continued from: still once, there.
        assert await chain.execute_update(Hopper.stamp, "a", id="u1", timeout=30) == f"a@{run0}"
        assert await chain.get_update_handle("u1", result_type=str).result(timeout=30) == f"a@{run0}"
        # u2 was completed by run 1 after the reset point: the new run goes on from before
        # it, without its effect. A wait by its id alone finds nothing there; asked again,
        # it runs in the new run (docs/sdk.md, "Reset").
        with pytest.raises(WorkflowUpdateFailedError) as unknown:
            await chain.get_update_handle("u2", result_type=str).result(timeout=30)
        assert getattr(unknown.value.cause, "type", None) == "UpdateNotFound"
        assert await chain.execute_update(Hopper.stamp, "b", id="u2", timeout=30) == f"b@{new}"
        assert await chain.execute_update(Hopper.stamp, "b", id="u2", timeout=30) == f"b@{new}"
        assert await _accepted(client, wid, new) == ["u2"]
        await chain.terminate("done")


async def test_waiting_for_an_update_by_id_before_it_is_sent_does_not_refuse_it(client: Client, queue: str) -> None:
    # Another client waits for the update by its id before the sender's request arrives:
    # it hears UpdateNotFound, and the update, sent next, still runs.
    wid = f"hopper-early-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[Hopper]):
        handle = await client.start_workflow(Hopper.run, 0, id=wid, task_queue=queue)
        for _ in range(2):
            with pytest.raises(WorkflowUpdateFailedError) as early:
                await handle.get_update_handle("early", result_type=str).result(timeout=30)
            assert getattr(early.value.cause, "type", None) == "UpdateNotFound", early.value
        assert await handle.execute_update(Hopper.stamp, "c", id="early", timeout=30) == f"c@{handle.run_id}"
        assert await handle.get_update_handle("early", result_type=str).result(timeout=30) == f"c@{handle.run_id}"
        await handle.terminate("done")


@workflow.defn
class Gate:
    def __init__(self) -> None:
        self.open = False

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)

    @workflow.update
    async def through(self, note: str) -> str:
        await workflow.wait_condition(lambda: self.open)
        return f"{note}@{workflow.info().run_id}"

    @workflow.signal
    def release(self) -> None:
        self.open = True

    @workflow.signal
    def poke(self) -> None:
        pass


async def test_an_update_running_when_its_run_is_reset_is_waited_for_in_the_new_run(client: Client, queue: str) -> None:
    # The accepted answer pinned the handle to run 0; the reset moves the running update to
    # the new run. Asked after the reset, run 0 sends the ask on to the new run, whose
    # answer the handle gets, instead of "closed before the update completed".
    wid = f"gate-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[Gate]):
        handle = await client.start_workflow(Gate.run, id=wid, task_queue=queue)
        run0 = str(handle.run_id)
        update = await handle.start_update(Gate.through, "g", id="g1")
        assert update.run_id == run0
        new = str((await client.get_workflow_handle(wid, run_id=run0).reset(ResetPoint.FIRST, reason="t")).run_id)

        async def accepted_again() -> bool:
            return "g1" in await _accepted(client, wid, new)

        await eventually(accepted_again, timeout=20, what="the update accepted by the new run")
        await client.get_workflow_handle(wid, run_id=new).signal(Gate.release)
        assert await update.result(timeout=30) == f"g@{new}"
        assert await client.get_workflow_handle(wid).get_update_handle("g1", result_type=str).result(
            timeout=30) == f"g@{new}"
        await client.get_workflow_handle(wid).terminate("done")


async def test_a_caller_waiting_for_an_update_accepted_before_the_reset_point_gets_the_new_runs_answer(
        client: Client, queue: str) -> None:
    # Accepted before the reset point, the update is in the new run's copy of the history and
    # its handler runs again there; the caller waiting on the old run meanwhile is moved with
    # it, rather than answered "closed before the update completed".
    wid = f"gate-b-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[Gate]):
        handle = await client.start_workflow(Gate.run, id=wid, task_queue=queue)
        run0 = str(handle.run_id)
        update = await handle.start_update(Gate.through, "g", id="g2")
        await handle.signal(Gate.poke)  # a task completed after the acceptance: the reset point

        async def poked() -> bool:
            kinds = [e["event_type"] for e in await client.get_workflow_handle(wid, run_id=run0).history()]
            return kinds[-1] == "WorkflowTaskCompleted" and "WorkflowExecutionSignaled" in kinds

        await eventually(poked, timeout=20, what="the task after the signal")
        waiting = asyncio.ensure_future(update.result(timeout=60))
        await asyncio.sleep(1.0)  # the wait is with the old run
        new = str((await client.get_workflow_handle(wid, run_id=run0).reset(ResetPoint.LAST, reason="t")).run_id)
        await client.get_workflow_handle(wid, run_id=new).signal(Gate.release)
        assert await waiting == f"g@{new}"
        await client.get_workflow_handle(wid).terminate("done")
