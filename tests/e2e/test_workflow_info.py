"""`workflow.info()` as Temporal's: a child knows its parent (`parent`), a run its retry
policy (`retry_policy`) and its search attributes (`search_attributes`, upserts merged in),
and continue-as-new carries the search attributes over unless it is given others."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import aiohttp
import pytest

from kadence import Client, RetryPolicy, Worker, workflow
from services.cluster import Cluster

pytestmark = pytest.mark.timeout(90)
QUEUE = "q-info"


def _info() -> dict[str, Any]:
    info = workflow.info()
    parent = info.parent
    return {
        "parent": None if parent is None else [parent.namespace, parent.workflow_id, parent.run_id],
        "retry_attempts": None if info.retry_policy is None else info.retry_policy.maximum_attempts,
        "search_attributes": dict(info.search_attributes),
    }


@workflow.defn
class InfoChild:
    @workflow.run
    async def run(self) -> dict[str, Any]:
        return _info()


@workflow.defn
class InfoParent:
    @workflow.run
    async def run(self, generation: int) -> dict[str, Any]:
        if generation == 0:
            workflow.upsert_search_attributes({"InfoStage": "upserted"})
            workflow.continue_as_new(1)  # keeps the attributes, as Temporal's default
        child = await workflow.execute_child_workflow(
            InfoChild.run, id=f"{workflow.info().workflow_id}-child",
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=3))
        return {"own": _info(), "child": child, "run_id": workflow.info().run_id}


async def test_info_names_the_parent_the_retry_policy_and_the_search_attributes(client: Client,
                                                                                 cluster: Cluster) -> None:
    async with aiohttp.ClientSession() as http:
        for name in ("InfoStage", "InfoOwner"):
            async with http.post(f"{cluster.url}/api/v1/namespaces/default/search-attributes",
                                 json={"name": name, "type": "keyword"}) as r:
                assert r.status in (200, 201), await r.text()
    wid = f"info-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=QUEUE, workflows=[InfoParent, InfoChild]):
        handle = await client.start_workflow(InfoParent.run, 0, id=wid, task_queue=QUEUE,
                                             search_attributes={"InfoOwner": "ops"})
        out = await handle.result(timeout=30)
    attributes = {"InfoOwner": "ops", "InfoStage": "upserted"}
    assert out["own"] == {"parent": None, "retry_attempts": None, "search_attributes": attributes}
    assert out["child"] == {"parent": ["default", wid, out["run_id"]], "retry_attempts": 3, "search_attributes": {}}
    assert (await client.get_workflow_handle(wid).describe())["search_attributes"] == attributes
