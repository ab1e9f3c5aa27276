"""History's HTTP server: ``GET /health`` of a history process run on its own
(``python -m services.history``), and the internal endpoint taking command notices.

In ``kadence dev`` and ``services.cluster`` the frontend's ``/health`` carries the same
report. A separate history process has no other HTTP server: this one starts when
``KADENCE_HISTORY_HEALTH_PORT`` is set (0: any free port), on ``KADENCE_HISTORY_HEALTH_HOST``,
and also (on a free port unless that one is set) when it takes command notices from
frontends in other processes (``POST /internal/commands``, services/common/command_notices.py),
which, like every internal endpoint, need ``KADENCE_INTERNAL_KEY`` when one is set.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from aiohttp import web

from services.common import internal_auth
from services.common.bind import serve
from services.common.command_notices import PATH, CommandNotice, NoticeOutcome, notices_from_json
from services.common.health import HealthSource, health_answer
from services.common.supervision import Fatal

# Offers a partition's noticed commands to its shard, if it runs here (HistoryService.noticed_commands).
TakeNotices = Callable[[int, list[CommandNotice]], NoticeOutcome]
NoticeCounts = Callable[[], dict[str, object]]  # what became of notices, for GET /internal/notices
_INTERNAL = "/internal"


class HealthServer:
    def __init__(self, source: HealthSource, fatal: Fatal, *, notices: TakeNotices | None = None,
                 counts: NoticeCounts | None = None, internal_key: str = "") -> None:
        self._source = source
        self._fatal = fatal
        self._notices = notices
        self._counts = counts
        self._key = internal_key
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.takes_notices = notices is not None  # POST /internal/commands is served

    async def start(self, host: str, port: int) -> str:
        app = web.Application()
        app.router.add_get("/health", self._health)
        if self._notices is not None:
            internal = web.Application(middlewares=[internal_auth.middleware(self._key)] if self._key else [])
            internal.router.add_post(PATH.removeprefix(_INTERNAL), self._commands)
            internal.router.add_get("/notices", self._notice_counts)
            app.add_subapp(_INTERNAL, internal)
        self._runner, self.url = await serve(app, host, port)
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _health(self, request: web.Request) -> web.Response:
        status, body = health_answer({"history": self._source}, self._fatal)
        return web.json_response(body, status=status)

    async def _notice_counts(self, request: web.Request) -> web.Response:
        return web.json_response(self._counts() if self._counts is not None else {})

    async def _commands(self, request: web.Request) -> web.Response:
        assert self._notices is not None
        try:
            partition, notices = notices_from_json(_object(json.loads(await request.read())))
        except (ValueError, KeyError, TypeError) as exc:  # binascii.Error and JSONDecodeError included
            return web.json_response({"error": "InvalidArgument", "message": f"not a command notice: {exc!r}"},
                                     status=400)
        outcome = self._notices(partition, notices)
        return web.json_response({"offered": outcome.offered, "not_owned": outcome.not_owned})


def _object(body: object) -> dict[str, object]:
    if not isinstance(body, dict):
        raise TypeError("the body is not a JSON object")
    return body
