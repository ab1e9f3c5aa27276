"""The frontend's HTTP transport and service life cycle.

Routes come from the one table in ``handlers.py``; JSON parsing happens here, errors
are mapped and requests logged by middlewares, so handlers stay free of HTTP.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiohttp import web
from aiokafka.errors import KafkaError

from kadence_protocol import exact_json
from kadence_protocol.limits import MAX_REQUEST_BYTES
from kadence_protocol.tracing import tracer
from services.common import db, internal_auth, outage
from services.common.bind import UnsafeBind
from services.common.colocation import CommandBus, KafkaCommands, TracedCommands, traced_commands
from services.common.command_notices import HistoryOwners, NoticedCommands
from services.common.config import LISTEN_BACKLOG, Settings
from services.common.fetch_waits import Consumer, fetch_wait_ms
from services.common.health import HealthSource, health_answer
from services.common.ingress_auth import IngressPolicy
from services.common.kafka import new_producer
from services.common.matching import LocalMatchingService, MatchingClient
from services.common.namespaces import MISS_READ_INTERVAL_S, NamespaceLimits, NamespaceRegistry, NamespaceStore
from services.common.read_bound import BoundedReads, ReadTimedOut
from services.common.read_budgets import ReadBudgets, done_reading, reading_as
from services.common.reply_notices import reply_to_of
from services.common.supervision import Fatal
from services.common.telemetry import http_server_middleware, metrics
from services.common.validation import Limits
from services.common.visibility.reads import VisibilityReads

from .admin import ADMIN_ROUTES, AdminHandlers, not_found
from .auth import Authenticator, served, serving
from .closed import CloseWatcher
from .engine import Engine
from .errors import RETRY_AFTER_S, FrontendError, Unavailable
from .exposure import check_bind
from .handlers import PREFIX, ROUTES, Handlers, Streamed
from .openapi import COMPONENTS, document, request_schema
from .quotas import LIMITED, PER_ITEM, Quotas
from .quotas import Kind as QuotaKind
from .read_kinds import read_kind
from .reads import ReadStore
from .replies import ReplyRouter
from .reply_notices import ReplyNoticeServer
from .schema_check import check_fast as check_body
from .task_queues import TASK_QUEUE_ROUTES, TaskQueueHandlers, TaskQueueReads
from .tokens import TokenKeys
from .ui import UiData, install_ui
from .validation import namespace as valid_namespace
from .validation import parse_json_body

log = logging.getLogger(__name__)
access_log = logging.getLogger("kadence.frontend.access")

RouteHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SHUTDOWN_S = 10.0  # how long a stopping frontend waits for the calls in flight
# The request line's limit: a workflow id of 1000 non-ASCII characters (2000 UTF-8 bytes) is
# 6000 characters once percent-encoded, a run id in the query as much again; aiohttp's
# default (8190) refused such valid calls with a plain-text 400 before any handler ran.
MAX_REQUEST_LINE = 32 * 1024
FRONTEND_POOL_SIZE = 10  # connections of a frontend on its own, unless KADENCE_FRONTEND_POOL_SIZE says


def _json_error(status: int, error: str, message: str, field: str | None = None,
                **extra: Any) -> web.Response:
    return web.json_response({"error": error, "message": message, "field": field, **extra}, status=status)


def _unavailable_read(exc: ReadTimedOut) -> web.Response:
    """503 for a bounded read that gave up: why, and, when a share of the pool was full
    (read_budgets.py), which one (``limit``) and its size (``limit_value``)."""
    extra: dict[str, Any] = {}
    if exc.limit is not None:
        extra = {"limit": exc.limit, "limit_value": exc.slots, "retry_after_ms": int(RETRY_AFTER_S) * 1000}
    response = _json_error(503, "Unavailable", f"{exc}; retry later", **extra)
    response.headers["Retry-After"] = RETRY_AFTER_S
    return response


# What the access log and the span record for a call whose caller hung up first (nginx's 499).
CALLER_GONE = 499


def _caller_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _answer(request: web.Request, handler: RouteHandler) -> web.StreamResponse:
    """Run the handler; map every error to a JSON answer; log the call at debug level."""
    started = time.monotonic()
    try:
        response = await handler(request)
    except FrontendError as exc:
        response = web.json_response(exc.body(), status=exc.status, headers=exc.headers() or None)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _json_error(exc.status, exc.reason.replace(" ", ""), exc.text or exc.reason)
        if "Allow" in exc.headers:  # 405: the methods the path takes (RFC 9110)
            response.headers["Allow"] = exc.headers["Allow"]
    except ReadTimedOut as exc:  # before OSError: it says which wait ran out, and which share was full
        log.warning("%s %s: %s", request.method, request.path, exc)
        response = _unavailable_read(exc)
    except outage.DATABASE_TRANSIENT as exc:
        if isinstance(exc, ConnectionResetError) and _caller_gone(request):
            # aiohttp's write to a caller that hung up mid-answer (a ConnectionResetError, an
            # OSError like a database outage's): nobody is left to answer, and the database is fine.
            log.debug("%s %s: the caller went away: %r", request.method, request.path, exc)
            response = _json_error(CALLER_GONE, "CallerGone", "the caller closed the connection")
        else:
            log.warning("%s %s: database unavailable: %r", request.method, request.path, exc)
            response = _json_error(503, "Unavailable", "the database is unavailable; retry later")
            response.headers["Retry-After"] = RETRY_AFTER_S
    except KafkaError as exc:
        response = _json_error(503, "Unavailable", f"the broker is unavailable: {exc!r}")
        response.headers["Retry-After"] = RETRY_AFTER_S
    except RecursionError:  # a value nested deeper than a check below knew to refuse (validation.py)
        log.warning("%s %s: the request is nested too deeply", request.method, request.path)
        response = _json_error(400, "InvalidArgument", "the request is nested too deeply")
    except Exception:  # the last line of defence: answer 500 rather than drop the connection
        log.exception("%s %s failed", request.method, request.path)
        response = _json_error(500, "Internal", "internal error; see the frontend log")
    if access_log.isEnabledFor(logging.DEBUG):
        access_log.debug("%s %s %d %.1fms", request.method, request.path, response.status,
                         (time.monotonic() - started) * 1000)
    return response


@web.middleware
async def api_middleware(request: web.Request, handler: RouteHandler) -> web.StreamResponse:
    """The one middleware of the API (each layer costs on every call): errors and access log,
    inside a SERVER span when tracing is on, so the span sees the status answered."""
    if tracer() is None:
        return await _answer(request, handler)
    return await http_server_middleware(request, functools.partial(_answer, handler=handler))


def _route(handlers: object, name: str, *, has_body: bool, auth: Authenticator | None,
           namespaces: NamespaceRegistry | None = None, quotas: Quotas | None = None) -> RouteHandler:
    method = getattr(handlers, name)
    # The body schema of the OpenAPI document is the contract: checked before the handler runs.
    schema = request_schema(name) if has_body else None
    kind = None if quotas is None else LIMITED.get(name)
    per_item = PER_ITEM.get(name)
    reads = read_kind(name)

    async def route(request: web.Request) -> web.StreamResponse:
        # The call's reads count against its kind's share of the pool, in turn by namespace.
        reading = reading_as(reads, request.match_info.get("namespace", ""))
        try:
            return await handle(request)
        finally:
            done_reading(reading)

    async def handle(request: web.Request) -> web.StreamResponse:
        mark = None
        polling = None
        match = request.match_info
        if auth is not None:  # before the body is read: an unknown caller costs nothing more
            # Routes without a namespace (create and list namespaces) need a grant on "*".
            principal = auth.check(request.headers.get("Authorization"), name, match.get("namespace", "*"),
                                   match.get("task_queue"))
            mark = serving(auth, principal)  # for the task queue of a task token (handlers.py)
        try:
            ns = match.get("namespace")
            # A set lookup for a known namespace; PostgreSQL is asked only on a miss (namespaces.py).
            if namespaces is not None and ns is not None and ns not in namespaces.known:
                if not await namespaces.is_registered(valid_namespace(ns)):
                    raise not_found(ns)
            # Limits: refused here, before the body is read and before anything goes to Kafka.
            if kind is not None and quotas is not None and ns is not None:
                if kind is QuotaKind.POLLS:
                    quotas.poll_opened(ns)
                    polling = ns
                else:  # a batch is refused here too when no token is left, before its body is read
                    quotas.admit(ns, kind, 0.0 if per_item else 1.0)
            body = parse_json_body(await request.read()) if has_body else {}
            if per_item and kind is not None and quotas is not None and ns is not None:
                items = body.get(per_item)  # a batch costs what its items would one by one
                quotas.charge(ns, kind, max(1, len(items) if isinstance(items, list) else 1))
            if schema is not None:
                check_body(schema, body, COMPONENTS)
            status, answer = await method(request.match_info, request.query, body)
        finally:
            if mark is not None:
                served(mark)
            if polling is not None and quotas is not None:
                quotas.poll_closed(polling)
        if isinstance(answer, Streamed):
            return await _stream(request, status, answer)
        # orjson: a poll answer carries a workflow task's events, and json.dumps is a
        # noticeable share of the frontend's CPU.
        return web.Response(body=exact_json.dumps(answer), status=status, content_type="application/json")

    route.__name__ = name
    return route


async def _stream(request: web.Request, status: int, answer: Streamed) -> web.StreamResponse:
    """Write ``{key: [...]}`` one item a line as each is ready: the whole is one JSON document,
    and a reader may take each line on its own (every item line but the first starts with a
    comma). A failure mid-way ends the answer without its closing line, so the reader can tell
    it apart from a whole one and ask again for what it lacks."""
    response = web.StreamResponse(status=status, headers={"Content-Type": "application/json"})
    try:
        await response.prepare(request)
        await response.write(b'{"' + answer.key.encode() + b'":[\n')
        separator = b""
        async for group in answer.items:
            # The items ready together go out as one chunk, each on its own line.
            lines = [separator + orjson.dumps(group[0])]
            lines += [b"," + orjson.dumps(item) for item in group[1:]]
            await response.write(b"\n".join(lines) + b"\n")
            separator = b","
    except ConnectionResetError:
        raise  # the caller went away: nothing left to write to
    except Exception:  # the answer is cut short; the reader asks again for the items it lacks
        log.exception("%s %s failed mid-answer", request.method, request.path)
        response.force_close()
        return response
    finally:
        await answer.items.aclose()  # stops the calls still running, now rather than when collected
    await response.write(b"]}\n")
    await response.write_eof()
    return response


def _any_segment(path: str) -> str:
    """``path`` with each ``{name}`` matching any one segment: aiohttp's default pattern
    refuses '{' and '}', which workflow ids and task queues may hold."""
    return re.sub(r"\{(\w+)\}", r"{\1:[^/]+}", path)


def _count_or_describe(count: RouteHandler, describe: RouteHandler) -> RouteHandler:
    """``GET /workflows/count`` counts runs; with a ``run_id`` parameter, which a count never
    takes, it describes the workflow whose id is "count", the one id its path cannot tell apart.
    The SDK and the CLI always send ``run_id`` with a describe (empty: the latest run)."""
    async def route(request: web.Request) -> web.StreamResponse:
        if "run_id" not in request.query:
            return await count(request)
        request.match_info["workflow_id"] = "count"
        return await describe(request)
    return route


def build_app(handlers: Handlers, auth: Authenticator | None = None,
              health_sources: dict[str, HealthSource] | None = None, fatal: Fatal | None = None,
              ui: UiData | None = None, admin: AdminHandlers | None = None,
              task_queues: TaskQueueHandlers | None = None, quotas: Quotas | None = None) -> web.Application:
    """The API; with ``auth``, every call under PREFIX is authenticated and authorized
    (auth.py); /openapi.json and /health stay open. With ``ui``, the web UI too (ui/). With
    ``admin``, namespaces and schedules are served too, and a call to a namespace that is not
    registered is answered 404. With ``quotas``, each namespace's limits are enforced (quotas.py)."""
    app = web.Application(middlewares=[api_middleware], client_max_size=MAX_REQUEST_BYTES)
    registry = None if admin is None else admin.registry
    handlers.cron_starts = admin
    if admin is not None:
        admin.quotas = quotas
    routes = {name: _route(handlers, name, has_body=method == "POST", auth=auth, namespaces=registry, quotas=quotas)
              for method, _, name in ROUTES}
    routes["count_workflows"] = _count_or_describe(routes["count_workflows"], routes["describe"])
    for method, path, name in ROUTES:
        app.router.add_route(method, _any_segment(PREFIX + path), routes[name])
    for method, path, name in ADMIN_ROUTES if admin is not None else ():
        app.router.add_route(method, _any_segment(path),
                             _route(admin, name, has_body=method in ("POST", "PATCH"), auth=auth,
                                    namespaces=None if name == "create_namespace" else registry, quotas=quotas))
    for method, path, name in TASK_QUEUE_ROUTES if task_queues is not None else ():
        app.router.add_route(method, _any_segment(path),
                             _route(task_queues, name, has_body=False, auth=auth, namespaces=registry,
                                    quotas=quotas))
    openapi = document()

    async def openapi_json(request: web.Request) -> web.Response:
        return web.json_response(openapi)

    async def health(request: web.Request) -> web.Response:
        status, body = health_answer(health_sources or {}, fatal)
        return web.json_response(body, status=status)

    app.router.add_get("/openapi.json", openapi_json)
    app.router.add_get("/health", health)
    if ui is not None:
        ui.registry = ui.registry or registry
        install_ui(app, ui)
    return app


def _count_refusal(ns: str, kind: QuotaKind) -> None:
    instruments = metrics()
    if instruments is not None:
        instruments.requests_refused.add(1, {"kadence.namespace": ns, "kadence.limit": kind.value})


class FrontendService:
    def __init__(
        self, settings: Settings, *, pool: asyncpg.Pool | None = None,
        matching: LocalMatchingService | MatchingClient | None = None, commands: CommandBus | None = None,
    ) -> None:
        # Where commands go besides the broker (services/common/colocation.py).
        # Traced whenever tracing is on, so a command notice (command_notices.py) carries the
        # trace headers its broker record carries: history often takes the notice first.
        bus = commands or KafkaCommands()
        self._commands = bus if isinstance(bus, TracedCommands) else traced_commands(bus)
        self.settings = settings
        self._pool = pool
        self._own_pool = pool is None
        self._matching_arg = matching
        self._matching: MatchingClient | None = None
        self._own_matching = not isinstance(matching, MatchingClient)
        self._runner: web.AppRunner | None = None
        self._producer: Any = None
        self._replies: ReplyRouter | None = None
        self._closes: CloseWatcher | None = None
        self._engine: Engine | None = None
        self.url = ""
        self.fatal = Fatal()  # the runner waits on it (a Cluster shares one among its services)
        # Reports /health includes, by name (Cluster adds history's); set before start().
        self.health_sources: dict[str, HealthSource] = {}
        self.command_notices: NoticedCommands | None = None  # set by start() when history runs elsewhere
        self.reply_notices: ReplyNoticeServer | None = None  # likewise
        self.quotas: Quotas | None = None  # each namespace's limits here (quotas.py); set by start()
        self.namespaces: NamespaceRegistry | None = None  # which are registered (namespaces.py); likewise

    async def start(self) -> None:
        s = self.settings
        check_bind(s.frontend_host, auth_configured=bool(s.auth_config), insecure=s.insecure)
        # Without configured keys (tests, one-process clusters) tokens live as long as this frontend.
        keys = TokenKeys.parse(s.task_token_keys) if s.task_token_keys else TokenKeys.of([TokenKeys.new_key()])
        auth = Authenticator.from_file(Path(s.auth_config)) if s.auth_config else None
        if self._pool is None:
            self._pool = await db.create_pool(s.database_url, max_size=s.frontend_pool_size or FRONTEND_POOL_SIZE)
        if isinstance(self._matching_arg, MatchingClient):
            self._matching = self._matching_arg
            self._matching.resume_polls()  # a previous stop of this frontend released its polls
        else:
            self._matching = MatchingClient(self._pool, s.task_partitions, local=self._matching_arg,
                                            internal_key=s.internal_key)
        ingress = IngressPolicy.from_file(Path(s.ingress_keys)) if s.ingress_keys else None
        self._producer = new_producer(s.kafka_bootstrap, s.kafka_security, request_timeout_ms=10_000,
                                      signer=ingress.frontend_signer() if ingress is not None else None)
        try:
            await self._producer.start()
        except KafkaError as exc:
            raise Unavailable(f"cannot reach the broker at {s.kafka_bootstrap}: {exc!r}") from exc
        reply_to = await self._serve_reply_notices()
        # Replies noticed by history: the fetch is the fallback, with the longer wait (fetch_waits.py).
        wait = fetch_wait_ms(s, Consumer.REPLIES, noticed=self.reply_notices is not None)
        self._replies = ReplyRouter(s.kafka_bootstrap, s.instance_id, wait, s.kafka_security, reply_to=reply_to,
                                    unanswered_after_s=s.health_unanswered_ms / 1000)
        await self._replies.start(self.fatal)
        self.health_sources.setdefault("replies", self._replies.health)  # does history answer?
        self._closes = CloseWatcher(self._pool)
        await self._closes.start(self.fatal)
        if not self._commands.colocated and s.command_notices:
            # History runs elsewhere: tell its owner of each acknowledged command (command_notices.py).
            self._commands = self.command_notices = NoticedCommands(
                self._commands, HistoryOwners(self._pool, internal_key=s.internal_key))
        # Each kind of read waits for its share of the pool (read_budgets.py; read_kinds.py).
        budgets = ReadBudgets(self._pool.get_max_size())
        self._engine = engine = Engine(
            instance_id=reply_to, producer=self._producer, replies=self._replies, closes=self._closes,
            reads=ReadStore(self._pool, read_timeout=s.read_timeout_ms / 1000, budgets=budgets),
            matching=self._matching, reply_timeout=s.reply_timeout_ms / 1000,
            started_delay=s.started_record_delay_ms / 1000,
            commands=self._commands, token_keys=keys)
        engine.open()
        handlers = Handlers(engine, VisibilityReads(self._pool, read_timeout=s.read_timeout_ms / 1000,
                                                    budgets=budgets))
        reads = BoundedReads(self._pool, s.read_timeout_ms / 1000, budgets=budgets)
        self.namespaces = NamespaceRegistry(reads, miss_read_interval=MISS_READ_INTERVAL_S)
        admin = AdminHandlers(self._pool, self.namespaces, shards=s.shards,
                              min_retention_ms=s.min_retention_ms, read_timeout=s.read_timeout_ms / 1000,
                              budgets=budgets)
        task_queues = TaskQueueReads(reads, self._matching)
        # The UI reads the pool itself too (start records, chain checks, the audit): bounded.
        ui = UiData(handlers, auth, pool=reads, bootstrap=s.kafka_bootstrap, matching=self._matching.local,
                    admin_handlers=admin, task_queue_reads=task_queues)
        self.quotas = quotas = Quotas(
            NamespaceLimits(s.namespace_rps or None, s.namespace_concurrent_polls or None,
                            s.namespace_visibility_rps or None, s.namespace_answer_rps or None),
            NamespaceStore(reads).limits)
        quotas.on_refused = _count_refusal
        ui.quotas = quotas
        app = build_app(handlers, auth, self.health_sources, self.fatal, ui, admin, TaskQueueHandlers(task_queues),
                        quotas)

        async def end_long_waits(app: web.Application) -> None:
            engine.end_long_waits()

        # Once the server stops accepting, polls and result waits answer at once: the shutdown
        # then waits only for calls that end by themselves (answers, starts), SHUTDOWN_S at most.
        app.on_shutdown.append(end_long_waits)
        engine.limits = Limits(max_payload_bytes=s.max_payload_bytes)
        # Cancel a handler when its client hangs up, so an abandoned poll gives its task back.
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=SHUTDOWN_S,
                                    max_line_size=MAX_REQUEST_LINE)
        await self._runner.setup()
        await web.TCPSite(self._runner, s.frontend_host, s.frontend_port, backlog=LISTEN_BACKLOG).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        log.info("frontend %s serving at %s", s.instance_id, self.url)

    async def _serve_reply_notices(self) -> str:
        """The reply_to of this frontend's commands: with history elsewhere and reply notices
        on, its instance id and the internal address taking them (reply_notices.py)."""
        s = self.settings
        if self._commands.colocated or not s.reply_notices:
            return s.instance_id
        try:
            internal_auth.check_bind("the frontend's reply notices", s.frontend_internal_host, key=s.internal_key,
                                     insecure=s.insecure)
        except UnsafeBind as exc:
            log.warning("%s; reply notices are off", exc)  # replies then come by fetch alone
            return s.instance_id
        self.reply_notices = ReplyNoticeServer(self.take_replies, s.internal_key)
        return reply_to_of(s.instance_id, await self.reply_notices.start(s.frontend_internal_host), s.internal_key)

    @property
    def instance_id(self) -> str:
        return self.settings.instance_id

    def take_replies(self, replies: list[dict[str, Any]]) -> None:
        """Replies to this frontend's commands, from history in this process."""
        if self._replies is not None:
            self._replies.deliver(replies)

    def take_closed(self, runs: list[tuple[str, dict[str, Any]]]) -> None:
        """Runs that history in this process has just closed, with their outcomes."""
        if self._closes is not None:
            self._closes.closed(runs)

    async def stop(self) -> None:
        """Stop; also after a start that failed half-way. Each step runs whatever an earlier
        one raised (raised at the end): a consumer, producer or pool left behind would go on."""

        async def stop_producer(producer: Any) -> None:
            try:
                await producer.stop()
            except KafkaError:
                log.warning("stopping the producer failed", exc_info=True)

        async with contextlib.AsyncExitStack() as then:  # run last pushed first
            then.callback(self._forget_parts)
            if self._own_pool and self._pool is not None:
                then.push_async_callback(self._pool.close)
            if self._matching is not None and self._own_matching:
                then.push_async_callback(self._matching.close)
            if self._producer is not None:
                then.push_async_callback(stop_producer, self._producer)
            if self.command_notices is not None:
                then.push_async_callback(self.command_notices.close)
            if self._replies is not None:
                then.push_async_callback(self._replies.stop)
            if self._closes is not None:
                then.push_async_callback(self._closes.stop)
            if self._engine is not None:
                then.push_async_callback(self._engine.close)  # before the producer: it sends what it still holds
            if self.reply_notices is not None:
                then.push_async_callback(self.reply_notices.stop)
            if self.quotas is not None:
                then.push_async_callback(self.quotas.close)
            if self._runner is not None:
                await self._runner.cleanup()

    def _forget_parts(self) -> None:
        """What the stop has stopped (a second stop finds nothing to stop)."""
        self._runner = self.reply_notices = self._engine = self._closes = self._replies = None
        if self.command_notices is not None:
            self._commands, self.command_notices = self.command_notices.inner, None
        self._producer = self._matching = None
        if self._own_pool:
            self._pool = None
