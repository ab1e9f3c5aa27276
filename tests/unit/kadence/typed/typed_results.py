"""Checked by ``mypy --strict`` in tests/unit/kadence/test_typed_results.py (not collected by pytest):
the results of activities, local activities, child workflows and workflows are inferred."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, assert_type

from kadence import Client, activity, workflow
from kadence.workflow import ChildWorkflowHandle


@dataclass
class Receipt:
    order: str
    cents: int


@activity.defn
async def charge(order: str) -> Receipt:
    return Receipt(order, 100)


@activity.defn
def count(text: str) -> int:
    return len(text)


@workflow.defn
class Child:
    @workflow.run
    async def run(self, n: int) -> list[str]:
        return [str(n)]


@workflow.defn
class Parent:
    @workflow.run
    async def run(self, order: str) -> Receipt:
        timeout = timedelta(seconds=5)
        receipt = await workflow.execute_activity(charge, order, start_to_close_timeout=timeout)
        assert_type(receipt, Receipt)
        assert_type(await workflow.execute_activity(count, order, start_to_close_timeout=timeout), int)
        assert_type(await workflow.execute_activity("charge", order, start_to_close_timeout=timeout), Any)
        assert_type(await workflow.execute_local_activity(charge, order, start_to_close_timeout=timeout), Receipt)
        assert_type(await workflow.execute_local_activity(count, order, start_to_close_timeout=timeout), int)
        handle = await workflow.start_child_workflow(Child.run, 3)
        assert_type(handle, ChildWorkflowHandle[list[str]])
        assert_type(await handle, list[str])
        assert_type(await handle.result(), list[str])
        assert_type(await workflow.execute_child_workflow(Child.run, 4), list[str])
        assert_type(await workflow.execute_child_workflow("Child", 4), Any)
        return receipt


async def client_side(client: Client) -> None:
    assert_type(await client.execute_workflow(Parent.run, "o-1", id="p", task_queue="q"), Receipt)
    assert_type(await client.execute_workflow("Parent", "o-1", id="p", task_queue="q"), Any)
