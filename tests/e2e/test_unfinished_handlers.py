"""Handlers still running when the workflow would close, as in Temporal:
`workflow.all_handlers_finished()` counts async signal handlers as well as updates, and a
run that closes while handlers run logs a warning naming them (unless the handler says
`unfinished_policy=HandlerUnfinishedPolicy.ABANDON`)."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

import pytest

from kadence import Client, Worker, workflow
from kadence.exceptions import WorkflowAlreadyClosedError
from services.cluster import Cluster

from .workflows import echo


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    """This module's tests share one cluster (tests/e2e/conftest.py module_cluster)."""
    return module_cluster


pytestmark = pytest.mark.timeout(90)
QUEUE = "q-unfinished"


@workflow.defn
class Handlers:
    def __init__(self) -> None:
        self.received = 0
        self.done: list[str] = []

    @workflow.run
    async def run(self, wait: bool) -> list[str]:
        await workflow.wait_condition(lambda: self.received >= 1)
        if wait:
            await workflow.wait_condition(workflow.all_handlers_finished)
        return self.done

    @workflow.signal
    async def order(self, item: str) -> None:
        self.received += 1
        self.done.append(await workflow.execute_activity(echo, item, start_to_close_timeout=timedelta(seconds=10)))

    @workflow.update
    async def slow(self) -> str:
        self.received += 1
        await workflow.sleep(30)
        return "slow"

    @workflow.update(unfinished_policy=workflow.HandlerUnfinishedPolicy.ABANDON)
    async def quiet(self) -> str:
        self.received += 1
        await workflow.sleep(30)
        return "quiet"


def _id() -> str:
    return f"unfinished-{uuid.uuid4().hex[:8]}"


async def test_all_handlers_finished_waits_for_an_async_signal_handler(client: Client) -> None:
    async with Worker(client, task_queue=QUEUE, workflows=[Handlers], activities=[echo]):
        handle = await client.start_workflow(Handlers.run, True, id=_id(), task_queue=QUEUE)
        await handle.signal(Handlers.order, "tea")
        assert await handle.result(timeout=20) == ["tea"]


async def test_a_run_closing_with_handlers_running_warns(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="kadence")
    async with Worker(client, task_queue=QUEUE, workflows=[Handlers], activities=[echo]):
        handle = await client.start_workflow(Handlers.run, False, id=_id(), task_queue=QUEUE)
        with pytest.raises(WorkflowAlreadyClosedError):
            await handle.execute_update(Handlers.slow)
        assert await handle.result(timeout=20) == []
        quiet = await client.start_workflow(Handlers.run, False, id=_id(), task_queue=QUEUE)
        with pytest.raises(WorkflowAlreadyClosedError):
            await quiet.execute_update(Handlers.quiet)
        assert await quiet.result(timeout=20) == []
    warnings = [r.getMessage() for r in caplog.records if "still running" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert handle.id in warnings[0] and "update 'slow'" in warnings[0] and "all_handlers_finished" in warnings[0]
