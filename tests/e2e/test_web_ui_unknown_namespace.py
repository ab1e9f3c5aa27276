"""The web UI's pages of a namespace that is not registered answer 404 naming it, as the
API does, instead of an empty workflow list that reads as "no runs"."""

from __future__ import annotations

import uuid

import aiohttp
import pytest

from services.cluster import Cluster

pytestmark = pytest.mark.timeout(120)


async def test_an_unregistered_namespace_is_a_404_page_naming_it(cluster: Cluster) -> None:
    ns = f"nope-{uuid.uuid4().hex[:6]}"
    async with aiohttp.ClientSession() as http:
        for page in ("workflows", "workflows/some-id", "task-queues", "schedules"):
            async with http.get(f"{cluster.url}/ui/namespaces/{ns}/{page}") as resp:
                text = await resp.text()
                assert resp.status == 404, (page, resp.status)
                assert f"namespace &#39;{ns}&#39; is not registered" in text, (page, text[:2000])
        async with http.get(f"{cluster.url}/ui/namespaces/default/workflows") as resp:
            assert resp.status == 200
