"""kadence.testing keeps memo and runs updates as the server does (validator, accept,
complete, reject without an event, one run per update id, a closed run)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from kadence import ApplicationError, workflow
from kadence.converter import DataConverter
from kadence.exceptions import WorkflowAlreadyClosedError, WorkflowUpdateFailedError
from kadence.testing import WorkflowEnvironment
from tests.unit.kadence.test_converter import XorZlib

pytestmark = pytest.mark.timeout(30)


@workflow.defn
class Memoed:
    @workflow.run
    async def run(self, rounds: int) -> dict[str, Any]:
        if rounds > 0:
            workflow.continue_as_new(rounds - 1)
        return workflow.memo()


async def test_memo_is_readable_in_the_workflow_and_carried_over_on_continue_as_new() -> None:
    async with WorkflowEnvironment(workflows=[Memoed]) as env:
        handle = await env.start_workflow(Memoed.run, 2, id="m-1", memo={"owner": "ana", "n": 1})
        assert await handle.result() == {"owner": "ana", "n": 1}
        assert (await handle.describe())["memo"] == {"owner": "ana", "n": 1}
        assert await env.execute_workflow(Memoed.run, 0, id="m-2") == {}


async def test_memo_goes_through_the_payload_codec() -> None:
    async with WorkflowEnvironment(workflows=[Memoed], data_converter=DataConverter(payload_codec=XorZlib())) as env:
        handle = await env.start_workflow(Memoed.run, 0, id="m-3", memo={"secret": "s3"})
        assert await handle.result() == {"secret": "s3"}
        started = (await handle.history())[0]["attributes"]
        assert "s3" not in str(started["memo"])
        assert (await handle.describe())["memo"] == {"secret": "s3"}


@dataclass
class Item:
    name: str
    qty: int


@workflow.defn
class Cart:
    def __init__(self) -> None:
        self.items: list[Item] = []
        self.checked_out = False

    @workflow.run
    async def run(self) -> list[str]:
        await workflow.wait_condition(lambda: self.checked_out)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return [i.name for i in self.items]

    @workflow.update
    def add(self, item: Item) -> int:
        self.items.append(item)
        return sum(i.qty for i in self.items)

    @add.validator
    def check_add(self, item: Item) -> None:
        if not item.name:
            raise ApplicationError("an item needs a name", type="EmptyItem")

    @workflow.update
    async def checkout(self, delay_days: int) -> int:
        await workflow.sleep(timedelta(days=delay_days))  # time skips while the caller waits
        if not self.items:
            raise ApplicationError("nothing to check out", type="EmptyCart")
        self.checked_out = True
        return len(self.items)


async def test_updates_accept_complete_reject_and_run_once_per_id() -> None:
    async with WorkflowEnvironment(workflows=[Cart]) as env:
        handle = await env.start_workflow(Cart.run, id="c-1")
        with pytest.raises(WorkflowUpdateFailedError) as failed:
            await handle.execute_update(Cart.checkout, 0)
        assert not failed.value.rejected and failed.value.cause.type == "EmptyCart"

        assert await handle.execute_update(Cart.add, Item("tea", 2), id="u-1") == 2
        assert await handle.execute_update(Cart.add, Item("tea", 2), id="u-1") == 2  # the same id: once
        before = len(await handle.history())
        with pytest.raises(WorkflowUpdateFailedError) as rejected:
            await handle.execute_update(Cart.add, Item("", 1))
        assert rejected.value.rejected and rejected.value.cause.type == "EmptyItem"
        events = await handle.history()
        assert "EmptyItem" not in str(events[before:])  # a rejection leaves no update event
        assert [e["event_type"] for e in events[before:]
                if e["event_type"].startswith("WorkflowExecutionUpdate")] == []

        pending = await handle.start_update(Cart.add, Item("cake", 1))
        assert await pending.result() == 3
        start = env.now()
        assert await handle.execute_update(Cart.checkout, 3) == 2
        assert env.now() - start >= timedelta(days=3)
        assert await handle.result() == ["tea", "cake"]
        kinds = [e["event_type"] for e in await handle.history()]
        assert kinds.count("WorkflowExecutionUpdateAccepted") == 4  # failed checkout, tea, cake, checkout
        assert kinds.count("WorkflowExecutionUpdateCompleted") == 4
        with pytest.raises(WorkflowAlreadyClosedError):
            await handle.execute_update(Cart.add, Item("late", 1))
