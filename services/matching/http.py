"""The internal HTTP API of a matching instance, for frontends in other processes.

``POST /internal/poll``, ``/internal/query``, ``/internal/respond-query`` and
``/internal/describe`` (a task queue's pollers and waiting tasks) take and give JSON; a
partition this instance does not own answers ``421 NotOwner`` so the caller looks the
owner up again. Handlers are cancelled when the caller hangs up,
which lets a poll put back a task it could no longer deliver.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from services.common import internal_auth
from services.common.bind import serve
from services.common.matching.errors import (
    MatchingError,
    NoPollerError,
    NotOwnerError,
    QueryFailedError,
    QueryTimeoutError,
    UnknownQueryError,
)
from services.common.matching.notices import notices_from_json
from services.common.matching.query_scope import QueryScope

if TYPE_CHECKING:
    from .service import MatchingService

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, error: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": error, "message": message, **extra}, status=status)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except NotOwnerError as exc:
        return _error(421, "NotOwner", str(exc), partition=exc.partition)
    except QueryFailedError as exc:
        return _error(400, "QueryFailed", str(exc), failure=exc.failure)
    except NoPollerError as exc:
        return _error(504, "NoPoller", str(exc))
    except QueryTimeoutError as exc:
        return _error(504, "QueryTimeout", str(exc))
    except UnknownQueryError as exc:
        return _error(404, "UnknownQuery", str(exc))
    except MatchingError as exc:
        return _error(500, type(exc).__name__, str(exc))
    except (KeyError, TypeError, ValueError) as exc:
        return _error(400, "InvalidArgument", f"bad internal request: {exc!r}")


async def _body(request: web.Request) -> dict[str, Any]:
    data = json.loads(await request.read() or b"{}")
    if not isinstance(data, dict):
        raise TypeError("the body must be a JSON object")
    return data


class InternalServer:
    def __init__(self, service: MatchingService, *, key: str = "") -> None:
        self._service = service
        self._key = key  # KADENCE_INTERNAL_KEY: every request must carry it (internal_auth.py)
        self._runner: web.AppRunner | None = None

    async def start(self, host: str, port: int) -> str:
        guard = [internal_auth.middleware(self._key)] if self._key else []
        app = web.Application(middlewares=[*guard, _errors])
        app.router.add_post("/internal/poll", self._poll)
        app.router.add_post("/internal/query", self._query)
        app.router.add_post("/internal/respond-query", self._respond_query)
        app.router.add_post("/internal/describe", self._describe)
        app.router.add_post("/internal/notice", self._notice)
        app.router.add_get("/internal/health", self._health)
        app.on_shutdown.append(self._release_polls)
        self._runner, url = await serve(app, host, port, handler_cancellation=True)
        return url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _release_polls(self, app: web.Application) -> None:
        self._service.release_polls()

    async def _poll(self, request: web.Request) -> web.Response:
        b = await _body(request)
        tasks = await self._service.poll(
            str(b["namespace"]), str(b["task_queue"]), str(b["kind"]), int(b.get("max_tasks", 1)),
            float(b.get("wait_seconds", 60)), str(b.get("identity", "")),
        )
        return web.json_response({"tasks": [t.to_json() for t in tasks]})

    async def _query(self, request: web.Request) -> web.Response:
        b = await _body(request)
        result = await self._service.query(
            str(b["namespace"]), str(b["task_queue"]), str(b["workflow_id"]), str(b["run_id"]),
            str(b["query_type"]), b.get("args_json"), float(b.get("timeout", 10)),
            workflow_type=str(b.get("workflow_type", "")),
        )
        return web.json_response({"result": result})

    async def _respond_query(self, request: web.Request) -> web.Response:
        b = await _body(request)
        self._service.respond_query(str(b["query_id"]), b.get("result"), b.get("failure"),
                                    scope=QueryScope.from_json(b))
        return web.json_response({})

    async def _notice(self, request: web.Request) -> web.Response:
        partition, notices = notices_from_json(await _body(request))
        outcome = await self._service.noticed(partition, notices)
        if outcome.matched:
            # A waiting poll was given a task: its answer (a worker waits for it) is written in
            # the next loop turn; this one's (history only sends its next notices after it) after.
            await asyncio.sleep(0)
        return web.json_response({"matched": outcome.matched, "stale": outcome.stale, "left": outcome.left})

    async def _describe(self, request: web.Request) -> web.Response:
        b = await _body(request)
        stats = self._service.describe_queue(str(b["namespace"]), str(b["task_queue"]))
        return web.json_response({"queues": [q.to_json() for q in stats]})

    async def _health(self, request: web.Request) -> web.Response:
        counts = self._service.notices
        body: dict[str, object] = {"owned_partitions": sorted(self._service.owned_partitions),
                                   "task_notices": {"matched": counts.matched, "stale": counts.stale,
                                                    "left": counts.left, "taken_held": counts.taken_held}}
        fatal = self._service.fatal.reason
        if fatal is not None:  # a loop died: the process is about to stop (supervision.py)
            body["fatal"] = fatal
        return web.json_response(body, status=200 if fatal is None else 503)
