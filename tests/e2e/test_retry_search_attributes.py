"""Search attributes and memo carried to the runs Kadence starts itself, through the whole
Kadence (real broker and PostgreSQL): a run the workflow retry policy starts keeps those of
the run it retries, workflow code's upserts included (Temporal's rule); a schedule's and a
cron start's runs take the action's. In the WorkflowExecutionStarted, describe and visibility."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import aiohttp
import pytest

from kadence import ApplicationError, Client, Worker, workflow
from kadence.common import RetryPolicy
from kadence.exceptions import RPCError, WorkflowNotFoundError
from services.cluster import Cluster
from tests.helpers import eventually


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    """This module's tests share one cluster (tests/e2e/conftest.py module_cluster)."""
    return module_cluster


pytestmark = pytest.mark.timeout(120)
FAST = RetryPolicy(initial_interval=timedelta(milliseconds=100), backoff_coefficient=1.0, maximum_attempts=3)


@workflow.defn
class Upserting:
    """Its first run upserts a search attribute and fails; the retry returns its attributes' view."""

    @workflow.run
    async def run(self) -> str:
        attempt = workflow.info().attempt
        if attempt == 1:
            workflow.upsert_search_attributes({"RetryStage": "upserted"})
            raise ApplicationError("first run fails", type="Flaky")
        return f"attempt {attempt} memo {workflow.info().memo}"



async def _keywords(cluster: Cluster, *names: str) -> None:
    """Register ``names`` as keyword search attributes of the default namespace."""
    base = f"{cluster.url}/api/v1/namespaces/default"
    async with aiohttp.ClientSession() as http:
        for name in names:
            async with http.post(f"{base}/search-attributes", json={"name": name, "type": "keyword"}) as r:
                assert r.status in (200, 201), await r.text()

async def test_a_retried_run_keeps_the_memo_and_the_search_attributes_upserts_included(
        client: Client, cluster: Cluster) -> None:
    await _keywords(cluster, "CustomerId", "RetryStage")
    tag = uuid.uuid4().hex[:6]
    wid, queue = f"sa-retry-{tag}", f"sa-retry-{tag}"
    async with Worker(client, task_queue=queue, workflows=[Upserting]):
        handle = await client.start_workflow(Upserting.run, id=wid, task_queue=queue, retry_policy=FAST,
                                             memo={"note": "kept"}, search_attributes={"CustomerId": f"c-{tag}"})
        first_run = handle.run_id
        assert await handle.result(timeout=60) == "attempt 2 memo {'note': 'kept'}"
    latest = client.get_workflow_handle(wid)
    described = await latest.describe()
    assert described["attempt"] == 2 and described["run_id"] != first_run
    assert described["memo"] == {"note": "kept"}
    started = (await latest.history())[0]["attributes"]
    assert json.loads(started["search_attributes"]) == {"CustomerId": f"c-{tag}", "RetryStage": "upserted"}

    async def listed() -> dict[str, object] | None:
        runs = [e async for e in client.list_workflows(f"WorkflowId = '{wid}' AND RetryStage = 'upserted'")]
        second = [r for r in runs if r.run_id == described["run_id"]]
        return second[0].search_attributes if second else None
    attributes = await eventually(listed, timeout=30, what="the retried run listed with its search attributes")
    assert attributes == {"CustomerId": f"c-{tag}", "RetryStage": "upserted"}


@workflow.defn
class Noting:
    @workflow.run
    async def run(self) -> str:
        return str(workflow.info().memo)


async def test_a_schedule_and_a_cron_start_give_every_run_their_memo_and_search_attributes(
        client: Client, cluster: Cluster) -> None:
    await _keywords(cluster, "CustomerId")
    tag = uuid.uuid4().hex[:6]
    queue = f"sa-sched-{tag}"
    # An attribute the namespace has not registered is refused, as a start's is.
    with pytest.raises(RPCError) as refused:
        await client.create_schedule(f"bad-{tag}", Noting.run, task_queue=queue, interval="1h",
                                     search_attributes={"Unregistered": "x"})
    assert (refused.value.status, refused.value.field) == (400, "action.search_attributes")
    created = await client.create_schedule(f"sched-{tag}", Noting.run, task_queue=queue, interval="1h",
                                           memo={"from": "schedule"}, search_attributes={"CustomerId": f"s-{tag}"})
    assert created["action"]["search_attributes"] == {"CustomerId": f"s-{tag}"}
    cron = await client.start_workflow(Noting.run, id=f"cron-{tag}", task_queue=queue, cron_schedule="* * * * * */2",
                                       memo={"from": "cron"}, search_attributes={"CustomerId": f"c-{tag}"})
    assert cron.run_id is None
    async with Worker(client, task_queue=queue, workflows=[Noting]):
        started = await client.trigger_schedule(f"sched-{tag}")

        async def result_of(wid: str) -> str | None:
            try:
                return str(await client.get_workflow_handle(wid).result(timeout=5))
            except WorkflowNotFoundError:  # the scheduler has not started it yet
                return None
        assert await eventually(lambda: result_of(started), timeout=30, what="the triggered run") == \
            "{'from': 'schedule'}"
        assert await eventually(lambda: result_of(f"cron-{tag}"), timeout=30, what="a cron run") == "{'from': 'cron'}"
    await client.delete_schedule(f"cron-cron-{tag}")
    for wid, value in ((started, f"s-{tag}"), (f"cron-{tag}", f"c-{tag}")):
        first = (await client.get_workflow_handle(wid).history())[0]["attributes"]
        assert json.loads(first["search_attributes"]) == {"CustomerId": value}

    async def listed() -> int:
        return len([e async for e in client.list_workflows(f"CustomerId IN ('s-{tag}', 'c-{tag}')")])
    await eventually(lambda: _at_least(listed, 2), timeout=30, what="the runs listed by their search attributes")


async def _at_least(count: object, n: int) -> bool:
    assert callable(count)
    return bool(await count() >= n)


@workflow.defn
class Staged:
    """Upserts its stage, then waits to be told to finish."""

    def __init__(self) -> None:
        self.done = False

    @workflow.run
    async def run(self) -> None:
        workflow.upsert_search_attributes({"RetryStage": "working"})
        await workflow.wait_condition(lambda: self.done)

    @workflow.signal
    def finish(self) -> None:
        self.done = True


async def test_describe_shows_the_search_attributes_with_the_workflows_upserts(client: Client,
                                                                              cluster: Cluster) -> None:
    await _keywords(cluster, "CustomerId", "RetryStage")
    tag = uuid.uuid4().hex[:6]
    wid, queue = f"sa-describe-{tag}", f"sa-describe-{tag}"
    expected = {"CustomerId": f"c-{tag}", "RetryStage": "working"}
    async with Worker(client, task_queue=queue, workflows=[Staged]):
        handle = await client.start_workflow(Staged.run, id=wid, task_queue=queue,
                                             search_attributes={"CustomerId": f"c-{tag}"})

        async def upserted() -> bool:
            return bool((await handle.describe())["search_attributes"] == expected)

        await eventually(upserted, timeout=30, what="the upsert in describe")
        await handle.signal(Staged.finish)
        await handle.result(timeout=30)
    described = await handle.describe()
    assert described["status"] == "Completed" and described["search_attributes"] == expected
