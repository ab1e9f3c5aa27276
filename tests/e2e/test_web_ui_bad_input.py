"""The web UI's pages refuse what the API refuses with the same 400, naming the field,
instead of passing it on to PostgreSQL and answering an internal error."""

from __future__ import annotations

import aiohttp
import pytest

from services.cluster import Cluster

pytestmark = pytest.mark.timeout(120)


async def test_a_task_queue_page_or_a_list_query_the_api_refuses_is_a_400_page(cluster: Cluster) -> None:
    base = f"{cluster.url}/ui/namespaces/default"
    async with aiohttp.ClientSession() as http:
        for path, field in (("/task-queues/q%00", "task_queue"), ("/task-queues/" + "q" * 1001, "task_queue")):
            async with http.get(base + path) as page:
                text = await page.text()
                assert page.status == 400, (path, page.status, text[:500])
                assert "InvalidArgument" in text and field in text, (path, text[:2000])
        # A list query the API refuses: the page says why beside the query, as for any mistake.
        async with http.get(f"{base}/workflows?query=HistoryLength%20%3D%20100000000000000000000000") as page:
            text = await page.text()
            assert page.status == 200 and 'id="query-error"' in text and "a whole number of 64 bits" in text
        async with http.get(f"{base}/task-queues/q") as page:
            assert page.status == 200


async def test_a_redrive_takes_offsets_only_not_true_for_one(cluster: Cluster) -> None:
    """{"offsets": [true]} re-drove the dead letter at offset 1: JSON true is Python's 1."""
    async with aiohttp.ClientSession() as http:
        for offsets in ([True], [False], [-1], [1.0], ["1"]):
            async with http.post(f"{cluster.url}/ui/api/dlq/redrive", json={"offsets": offsets},
                                 headers={"X-Kadence-UI": "1"}) as answer:
                refused = await answer.json()
                assert (answer.status, refused["field"]) == (400, "offsets"), (offsets, refused)
