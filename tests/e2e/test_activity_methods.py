"""Activities as methods of an object holding their dependencies (Temporal's usual pattern):
the worker is given the bound methods and calls them on that object, async or sync, as
activities and as local activities."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from kadence import Client, RetryPolicy, Worker, activity, workflow
from services.cluster import Cluster


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    """This module's tests share one cluster (tests/e2e/conftest.py module_cluster)."""
    return module_cluster


pytestmark = pytest.mark.timeout(90)
QUEUE = "q-activity-methods"


class Inventory:
    def __init__(self, stock: dict[str, int]) -> None:
        self.stock = stock

    @activity.defn
    async def reserve(self, sku: str) -> int:
        self.stock[sku] -= 1
        return self.stock[sku]

    @activity.defn
    def count(self, sku: str) -> int:  # sync: runs in a thread, on the same object
        return self.stock[sku]


@workflow.defn
class Reserve:
    @workflow.run
    async def run(self, sku: str) -> list[int]:
        once = RetryPolicy(maximum_attempts=1)
        left = await workflow.execute_activity(Inventory.reserve, sku, start_to_close_timeout=timedelta(seconds=10),
                                               retry_policy=once)
        counted = await workflow.execute_activity(Inventory.count, sku, start_to_close_timeout=timedelta(seconds=10),
                                                  retry_policy=once)
        local = await workflow.execute_local_activity("reserve", sku, start_to_close_timeout=timedelta(seconds=10),
                                                      retry_policy=once)
        return [left, counted, local]


@workflow.defn
class ReserveAsTemporalWritesIt:
    @workflow.run
    async def run(self, sku: str) -> list[int]:
        once = RetryPolicy(maximum_attempts=1)
        left = await workflow.execute_activity_method(Inventory.reserve, sku, retry_policy=once,
                                                      start_to_close_timeout=timedelta(seconds=10))
        counting = workflow.start_activity_method(Inventory.count, sku, retry_policy=once,
                                                  start_to_close_timeout=timedelta(seconds=10))
        counted = await counting
        local = await workflow.execute_local_activity_method(Inventory.reserve, sku, retry_policy=once,
                                                             start_to_close_timeout=timedelta(seconds=10))
        started_local = await workflow.start_local_activity_method(Inventory.count, sku, retry_policy=once,
                                                                   start_to_close_timeout=timedelta(seconds=10))
        return [left, counted, local, started_local]


async def test_bound_methods_run_on_their_object(client: Client) -> None:
    inventory = Inventory({"tea": 5})
    async with Worker(client, task_queue=QUEUE, workflows=[Reserve],
                      activities=[inventory.reserve, inventory.count]):
        handle = await client.start_workflow(Reserve.run, "tea", id=f"methods-{uuid.uuid4().hex[:8]}",
                                             task_queue=QUEUE)
        assert await handle.result(timeout=20) == [4, 4, 3]
    assert inventory.stock == {"tea": 3}


async def test_the_method_calls_temporal_names_run_on_the_workers_object(client: Client) -> None:
    inventory = Inventory({"tea": 5})
    async with Worker(client, task_queue=QUEUE, workflows=[ReserveAsTemporalWritesIt],
                      activities=[inventory.reserve, inventory.count]):
        handle = await client.start_workflow(ReserveAsTemporalWritesIt.run, "tea",
                                             id=f"methods-{uuid.uuid4().hex[:8]}", task_queue=QUEUE)
        assert await handle.result(timeout=20) == [4, 4, 3, 3]
    assert inventory.stock == {"tea": 3}
