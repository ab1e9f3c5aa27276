"""Search attributes read back by a list as the types they were set with (Temporal's typed
search attributes): a `datetime` attribute is a timezone-aware datetime, not its text."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from kadence import Client, Worker, workflow
from services.cluster import Cluster
from tests.helpers import eventually

pytestmark = pytest.mark.timeout(90)
QUEUE = "q-typed-attributes"


@workflow.defn
class Typed:
    @workflow.run
    async def run(self) -> None:
        workflow.upsert_search_attributes({"TypedShipBy": datetime(2031, 5, 6, 7, 8, 9, 250000, tzinfo=UTC),
                                           "TypedTags": ["a", "b"]})


async def test_a_listed_datetime_attribute_is_a_datetime(client: Client, cluster: Cluster) -> None:
    async with aiohttp.ClientSession() as http:
        for name, kind in (("TypedDueAt", "datetime"), ("TypedShipBy", "datetime"), ("TypedLevel", "int"),
                           ("TypedTags", "keyword_list")):
            async with http.post(f"{cluster.url}/api/v1/namespaces/default/search-attributes",
                                 json={"name": name, "type": kind}) as r:
                assert r.status in (200, 201), await r.text()
    wid = f"typed-{uuid.uuid4().hex[:8]}"
    due = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    async with Worker(client, task_queue=QUEUE, workflows=[Typed]):
        await client.execute_workflow(Typed.run, id=wid, task_queue=QUEUE,
                                      search_attributes={"TypedDueAt": due, "TypedLevel": 3})

    async def listed() -> dict[str, Any]:
        runs = [r async for r in client.list_workflows(f"WorkflowId = '{wid}' AND TypedTags = 'a'")]
        return (runs[0].search_attributes or {}) if runs else {}

    attributes: dict[str, Any] = await eventually(listed, timeout=20, what="the run listed with its upserted attributes")
    assert attributes == {"TypedDueAt": due, "TypedShipBy": datetime(2031, 5, 6, 7, 8, 9, 250000, tzinfo=UTC),
                          "TypedLevel": 3, "TypedTags": ["a", "b"]}
