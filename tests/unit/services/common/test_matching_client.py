"""The matching client (services/common/matching/client.py): once closed, and with an owner that
does not answer."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from services.common.matching.client import MatchingClient, Owner
from services.common.matching.errors import MatchingUnavailableError

pytestmark = pytest.mark.timeout(10)


async def test_a_closed_client_refuses_calls_instead_of_opening_a_new_session() -> None:
    client = MatchingClient(pool=None, task_partitions=1)  # no owner look-up here
    await client.close()
    with pytest.raises(MatchingUnavailableError, match="closed"):
        await client._call(Owner(0, "http://127.0.0.1:9", "gone"), "/internal/poll", {}, timeout=1)
    assert client._session is None


async def test_a_describe_asks_an_owner_that_did_not_answer_once_not_twice() -> None:
    """A frozen matching owner (SIGSTOP) keeps its row: the describe's second attempt found the
    same owner and waited its whole timeout again, twice the bound for the same silence."""
    asked: list[str] = []

    async def silent(request: web.Request) -> web.Response:
        asked.append(request.path)
        await asyncio.sleep(30)  # a frozen process: the connection is open, nothing answers
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/internal/describe", silent)
    async with TestServer(app) as server:
        address = str(server.make_url("")).rstrip("/")

        class OneOwner(MatchingClient):
            async def _read_owners(self) -> dict[int, Owner]:
                return {0: Owner(0, address, "frozen")}

        client = OneOwner(pool=None, task_partitions=1)  # owners read above
        try:
            began = time.monotonic()
            assert await client.describe_queue("default", "q", timeout=0.5) is None
            took = time.monotonic() - began
        finally:
            await client.close()
    assert asked == ["/internal/describe"]
    assert took < 1.0, took
