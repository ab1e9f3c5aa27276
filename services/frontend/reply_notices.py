"""The frontend's internal endpoint taking reply notices from history (services/common/reply_notices.py).

Started by a frontend whose history runs elsewhere (``KADENCE_REPLY_NOTICES``, default on),
on ``KADENCE_FRONTEND_INTERNAL_HOST`` (127.0.0.1 unless set) and a free port, behind
``KADENCE_INTERNAL_KEY`` when set. Each noticed Reply answers its waiters through the reply
router, as the same record read from ``kadence.replies`` would (whichever comes first).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from kadence_protocol import avro
from services.common import internal_auth
from services.common.bind import serve
from services.common.reply_notices import PATH, replies_from_json

log = logging.getLogger(__name__)

Deliver = Callable[[list[dict[str, Any]]], None]  # ReplyRouter.deliver


class ReplyNoticeServer:
    def __init__(self, deliver: Deliver, internal_key: str = "") -> None:
        self._deliver = deliver
        self._key = internal_key
        self._runner: web.AppRunner | None = None
        self.received = 0  # replies noticed
        self.url = ""

    async def start(self, host: str, port: int = 0) -> str:
        app = web.Application(middlewares=[internal_auth.middleware(self._key)] if self._key else [])
        app.router.add_post(PATH, self._replies)
        self._runner, self.url = await serve(app, host, port)
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _replies(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
            values = replies_from_json(body if isinstance(body, dict) else {})
            decoded = [avro.decode(v) for v in values]
        except (ValueError, TypeError, avro.DecodeError) as exc:
            return web.json_response({"error": "InvalidArgument", "message": f"not a reply notice: {exc!r}"},
                                     status=400)
        replies = [reply for name, reply in decoded if name == "Reply"]
        self.received += len(replies)
        self._deliver(replies)
        return web.json_response({"delivered": len(replies)})
