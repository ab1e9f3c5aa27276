"""``GET /health`` of a history process run on its own (``python -m services.history``).

In ``kadence dev`` and ``services.cluster`` the frontend's ``/health`` carries the same
report. A separate history process has no other HTTP server: this one starts when
``KADENCE_HISTORY_HEALTH_PORT`` is set (0: any free port), on ``KADENCE_HISTORY_HEALTH_HOST``.
"""

from __future__ import annotations

from aiohttp import web

from services.common.config import LISTEN_BACKLOG
from services.common.health import HealthSource, health_answer
from services.common.supervision import Fatal


class HealthServer:
    def __init__(self, source: HealthSource, fatal: Fatal) -> None:
        self._source = source
        self._fatal = fatal
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self, host: str, port: int) -> str:
        app = web.Application()
        app.router.add_get("/health", self._health)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port, backlog=LISTEN_BACKLOG).start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self.url = f"http://{bound_host}:{bound_port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _health(self, request: web.Request) -> web.Response:
        status, body = health_answer({"history": self._source}, self._fatal)
        return web.json_response(body, status=status)
