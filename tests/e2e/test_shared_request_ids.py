"""Request ids are scoped to a workflow (history's ledger keys them by namespace, workflow id
and request id), so two workflows may carry the same one. Each start must then be answered
with its own workflow's run, also when the two are in flight through one frontend at once
(one POST /workflow-starts, or concurrent POST /workflows): the frontend routes history's
reply by the request id and the workflow it names, not by the request id alone."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp
import pytest

from services.cluster import Cluster


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    """This module's tests share one cluster (tests/e2e/conftest.py module_cluster)."""
    return module_cluster


pytestmark = pytest.mark.timeout(90)

NS = "/api/v1/namespaces/default"


def _start(workflow_id: str, request_id: str) -> dict[str, Any]:
    return {"workflow_id": workflow_id, "workflow_type": "Nobody", "task_queue": "q-shared-rid",
            "input": [], "request_id": request_id}


async def _current_run(http: aiohttp.ClientSession, url: str, workflow_id: str) -> str:
    async with http.get(f"{url}{NS}/workflows/{workflow_id}") as resp:
        assert resp.status == 200, await resp.text()
        run_id: str = (await resp.json())["run_id"]
        return run_id


async def test_one_batch_with_a_request_id_shared_by_two_workflows_answers_each_its_own_run(
        cluster: Cluster) -> None:
    tag = uuid.uuid4().hex[:8]
    ids = [f"shared-a-{tag}", f"shared-b-{tag}"]
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{cluster.url}{NS}/workflow-starts",
                             json={"starts": [_start(wid, "same-request") for wid in ids]}) as resp:
            assert resp.status == 200
            results = (await resp.json())["results"]
        answered = {r["answer"]["workflow_id"]: r["answer"]["run_id"] for r in results if r["status"] == 201}
        assert sorted(answered) == sorted(ids), results
        for wid in ids:
            assert answered[wid] == await _current_run(http, cluster.url, wid)


async def test_concurrent_starts_sharing_a_request_id_across_workflows_each_get_their_own_run(
        cluster: Cluster) -> None:
    tag = uuid.uuid4().hex[:8]
    ids = [f"shared-{i}-{tag}" for i in range(6)]
    async with aiohttp.ClientSession() as http:
        async def start(wid: str) -> dict[str, Any]:
            async with http.post(f"{cluster.url}{NS}/workflows", json=_start(wid, f"rid-{tag}")) as resp:
                assert resp.status == 201, await resp.text()
                body: dict[str, Any] = await resp.json()
                return body
        answers = await asyncio.gather(*[start(wid) for wid in ids])
        for wid, answer in zip(ids, answers, strict=True):
            assert answer["workflow_id"] == wid
            assert answer["run_id"] == await _current_run(http, cluster.url, wid), (wid, answers)
