"""A run the workflow retry policy starts keeps the memo and the search attributes of the run
it retries, workflow code's upserts included (Temporal's rule), through the whole Kadence
(real broker and PostgreSQL): in its WorkflowExecutionStarted, in describe and in visibility."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import aiohttp
import pytest

from kadence import ApplicationError, Client, Worker, workflow
from kadence.common import RetryPolicy
from services.cluster import Cluster
from tests.helpers import eventually

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


async def test_a_retried_run_keeps_the_memo_and_the_search_attributes_upserts_included(
        client: Client, cluster: Cluster) -> None:
    base = f"{cluster.url}/api/v1/namespaces/default"
    async with aiohttp.ClientSession() as http:
        for name in ("CustomerId", "RetryStage"):
            async with http.post(f"{base}/search-attributes", json={"name": name, "type": "keyword"}) as r:
                assert r.status in (200, 201), await r.text()
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
