"""A request id names one command: a start's request id used again by a terminate, signal,
cancel or reset of the same workflow was answered ok with the start's run and applied
nothing (history's ledger kept request ids per workflow, whatever the command)."""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp
import pytest

from services.cluster import Cluster


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    """This module's tests share one cluster (tests/e2e/conftest.py module_cluster)."""
    return module_cluster


pytestmark = pytest.mark.timeout(120)


async def test_one_request_id_for_every_call_of_a_workflow_applies_each_call(cluster: Cluster) -> None:
    base = f"{cluster.url}/api/v1/namespaces/default/workflows"
    wid, rid = f"order-{uuid.uuid4().hex[:8]}", f"order-{uuid.uuid4().hex[:8]}"

    async with aiohttp.ClientSession() as http:
        async def post(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            async with http.post(base + path, json={**body, "request_id": rid}) as answer:
                return answer.status, await answer.json()

        status, started = await post("", {"workflow_id": wid, "workflow_type": "T", "task_queue": "q-none"})
        assert status == 201
        assert await post("", {"workflow_id": wid, "workflow_type": "T", "task_queue": "q-none"}) == (201, started)
        assert (await post(f"/{wid}/signal", {"signal_name": "go"}))[0] == 200
        assert (await post(f"/{wid}/cancel", {"reason": "r"}))[0] == 200
        assert (await post(f"/{wid}/terminate", {"reason": "done"}))[0] == 200
        async with http.get(f"{base}/{wid}/history") as answer:
            events = [e["event_type"] for e in (await answer.json())["events"]]
        assert events.count("WorkflowExecutionSignaled") == 1
        assert events.count("WorkflowExecutionCancelRequested") == 1
        assert events[-1] == "WorkflowExecutionTerminated"
        async with http.get(f"{base}/{wid}") as answer:
            assert (await answer.json())["status"] == "Terminated"
        # Each is still answered once: the terminate again is ok and changes nothing.
        assert (await post(f"/{wid}/terminate", {"reason": "again"}))[0] == 200


async def test_a_workflow_id_and_request_id_too_wide_together_are_a_400_naming_request_id(cluster: Cluster) -> None:
    """Each of 1998 bytes, valid alone: the ledger's index row refused them at the commit, and
    the 400 quoted PostgreSQL ('index row size 4024 exceeds btree ... maximum 2704')."""
    wide = "".join(chr(0x4E00 + i) for i in range(666))  # distinct characters: nothing compresses them
    body = {"workflow_id": wide, "workflow_type": "T", "task_queue": "q-none", "request_id": wide[::-1]}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{cluster.url}/api/v1/namespaces/default/workflows", json=body) as answer:
            refused = await answer.json()
    assert (answer.status, refused["field"]) == (400, "request_id"), refused
    assert "together" in refused["message"] and "index row" not in refused["message"]
