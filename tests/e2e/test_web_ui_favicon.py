"""Browsers ask every site for /favicon.ico: the UI answers it (no 404 in every log) and
its pages link an icon of their own."""

from __future__ import annotations

import aiohttp
import pytest

from services.cluster import Cluster

pytestmark = pytest.mark.timeout(60)


async def test_the_favicon_is_answered_and_pages_link_an_icon(cluster: Cluster) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{cluster.url}/favicon.ico") as r:
            assert r.status == 204, (r.status, await r.text())
            assert "max-age" in r.headers["Cache-Control"]
        async with http.get(f"{cluster.url}/ui/namespaces/default/workflows") as r:
            assert r.status == 200
            assert '<link rel="icon" href="/ui/static/favicon.svg"' in await r.text()
        async with http.get(f"{cluster.url}/ui/static/favicon.svg") as r:
            assert r.status == 200 and r.content_type == "image/svg+xml"
            assert (await r.text()).startswith("<svg")
