"""Result waits sent together (POST /workflow-results) while PostgreSQL is down.

An item whose wait cannot read the database is answered 503 on its own line, as the call
alone (GET .../result) would be, and the answer ends whole: it used to be cut short, every
other item's wait stopped with it and all of them were sent again alone, with a traceback
logged at ERROR for each such answer.
"""

from __future__ import annotations

import json

import aiohttp
import pytest

from services.cluster import Cluster
from services.common.embedded import EmbeddedPostgres

pytestmark = pytest.mark.timeout(60)


async def test_an_item_that_cannot_read_the_database_is_answered_503_alone(
        chaos_cluster: Cluster, own_postgres: EmbeddedPostgres) -> None:
    waits = [{"workflow_id": f"outage-{i}", "wait_seconds": 1} for i in range(3)]
    url = chaos_cluster.url + "/api/v1/namespaces/default/workflow-results"
    async with aiohttp.ClientSession() as http:
        # With the database up first: the namespace is known (and cached) before the outage.
        async with http.post(url, json={"waits": waits[:1]}) as r:
            assert r.status == 200 and (await r.json())["results"][0]["status"] == 404
        own_postgres.halt()
        try:
            async with http.post(url, json={"waits": waits}, timeout=aiohttp.ClientTimeout(total=20)) as r:
                assert r.status == 200
                text = await r.text()
        finally:
            own_postgres.resume()
    document = json.loads(text)  # whole: it was cut short, no closing line
    results = sorted(document["results"], key=lambda item: item["index"])
    assert [item["index"] for item in results] == [0, 1, 2]
    assert all(item["status"] == 503 and item["error"] == "Unavailable" for item in results), results
