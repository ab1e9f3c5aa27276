"""A proxy between a client and the real frontend that loses answers: the request is
forwarded and taken, then the connection is dropped before the answer reaches the client,
as when a frontend or a network path dies at the wrong moment. The client sees a
connection error and retries (or not); the tests check what the retry is answered."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web

__all__ = ["LosingProxy", "losing_proxy"]


@dataclass
class LosingProxy:
    """Forwards everything; ``lose(method, suffix)`` makes the next such call's answer lost."""

    upstream: str
    session: aiohttp.ClientSession
    #: (method, path suffix) -> answers still to lose
    losing: dict[tuple[str, str], int] = field(default_factory=dict)
    #: (method, path suffix) -> the bodies of every call sent to it since ``lose`` named it
    seen: dict[tuple[str, str], list[Any]] = field(default_factory=dict)

    def lose(self, method: str, suffix: str, times: int = 1) -> None:
        self.losing[(method, suffix)] = times
        self.seen[(method, suffix)] = []

    def calls(self, method: str, suffix: str) -> list[Any]:
        return self.seen.get((method, suffix), [])

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        key = next((k for k in self.seen if k[0] == request.method and request.path.endswith(k[1])), None)
        if key is not None:
            self.seen[key].append(orjson.loads(body) if body else None)
        async with self.session.request(request.method, self.upstream + request.path_qs, data=body,
                                        headers={"Content-Type": "application/json"}) as upstream:
            payload, status = await upstream.read(), upstream.status
            content_type = upstream.content_type
        if key is not None and self.losing.get(key, 0) > 0:
            self.losing[key] -= 1
            assert request.transport is not None
            request.transport.close()  # taken by the frontend, answer lost
            return web.Response()
        return web.Response(body=payload, status=status, content_type=content_type)


@contextlib.asynccontextmanager
async def losing_proxy(upstream: str) -> AsyncIterator[tuple[LosingProxy, str]]:
    """A LosingProxy in front of ``upstream`` and its URL, for the block."""
    async with aiohttp.ClientSession() as session:
        losing = LosingProxy(upstream.rstrip("/"), session)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", losing.handle)
        # A worker's long poll still forwarded at the end is not waited for (aiohttp's 60 s).
        runner = web.AppRunner(app, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            yield losing, f"http://127.0.0.1:{runner.addresses[0][1]}"
        finally:
            await runner.cleanup()
