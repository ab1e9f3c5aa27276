"""The web UI's pages and actions: server-rendered HTML (Jinja2, autoescaped) on the API port.

Pages are GETs under ``/ui``; actions are JSON POSTs under ``/ui/api`` that the page's
script sends with the ``X-Kadence-UI`` header (a cross-site form cannot set a custom header
nor a JSON content type, so no CSRF token is needed; the session cookie is also
SameSite=Strict). With authentication on, the sign-in page takes an API key or a JWT,
checks it, and keeps it in an HttpOnly cookie scoped to ``/ui``; every page and action then
authorizes it exactly as the API would (data.py). Every answer carries a
Content-Security-Policy without 'unsafe-inline': scripts and styles come from
``/ui/static`` only.
"""

from __future__ import annotations

import datetime as dt
import enum
import html
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from aiohttp import web
from aiokafka.errors import KafkaError

from kadence_protocol.queries import STACK_TRACE_QUERY
from kadence_protocol.visible_text import visible
from services.common import outage
from services.common.bounded import TopicReadError
from services.common.dlq import DeadLetterNotFound

from ..auth import Permission
from ..errors import RETRY_AFTER_S, FrontendError, InvalidArgument, NotFound, PermissionDenied
from . import diagnosis, timeline
from .data import Feature, Search, UiData, UnauthenticatedUi, WorkflowPage

HERE = Path(__file__).parent
COOKIE = "kadence_ui_credential"
CSRF_HEADER = "X-Kadence-UI"
NAMESPACES_PATH = "/api/v1/namespaces"
TRACE_UI_ENV = "KADENCE_TRACE_UI_URL"  # e.g. http://jaeger:16686/trace/{trace_id}
REFRESH_S = 5
PAGE_SIZE = 50
# The status filter's choices; statuses the counts report (Canceled, once there) are added.
STATUSES = ("Running", "Completed", "Failed", "Terminated", "ContinuedAsNew", "TimedOut", "Canceled")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}

Page = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Action(enum.Enum):
    QUERY = "query"
    SIGNAL = "signal"
    TERMINATE = "terminate"
    CANCEL = "cancel"
    RESET = "reset"

    @property
    def feature(self) -> Feature:
        return Feature[self.name]


class ScheduleAction(enum.Enum):
    PAUSE = "pause"
    UNPAUSE = "unpause"
    TRIGGER = "trigger"

    @property
    def feature(self) -> Feature:
        return Feature[f"{self.name}_SCHEDULE"]


@dataclass(frozen=True)
class UiSettings:
    """What the UI needs besides the handlers: the trace UI link (KADENCE_TRACE_UI_URL)."""

    trace_ui_url: str = ""

    @classmethod
    def from_env(cls) -> UiSettings:
        return cls(trace_ui_url=os.environ.get(TRACE_UI_ENV, ""))


def _ms(value: object) -> str:
    if not isinstance(value, int | float) or not value:
        return ""
    return dt.datetime.fromtimestamp(value / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def _duration(ms: object) -> str:
    if not isinstance(ms, int | float):
        return ""
    seconds = ms / 1000
    if seconds < 1:
        return f"{int(ms)} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _pretty(value: object) -> str:
    """A JSON payload (the API carries payloads as JSON text) indented for reading."""
    if value is None:
        return ""
    if isinstance(value, str):
        try:
            return json.dumps(json.loads(value), indent=2, ensure_ascii=False)
        except ValueError:
            return value
    return json.dumps(value, indent=2, ensure_ascii=False)


class _FormValue(str):
    """A value a form sends back (a run id, the list's filters): HTML-escaped only, so that the
    request names what is there, not its shown escapes (``{{ x|form_value }}``)."""

    __slots__ = ()

    def __html__(self) -> str:  # markupsafe's protocol: autoescape prints this as it is
        return html.escape(self)


def _shown(value: object) -> object:
    """What every ``{{ }}`` of the templates prints: control characters and bidi overrides as
    visible escapes (visible_text.py), which HTML escaping leaves as they are, so an id holding
    U+202E cannot pass for another in a table. Safe HTML (``|form_value``, ``|tojson``) is
    printed as it is, and so are numbers and None."""
    if hasattr(value, "__html__") or value is None or isinstance(value, (int, float)):
        return value
    return visible(str(value))


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True, finalize=_shown)
    env.filters["form_value"] = _FormValue
    env.filters["ms"] = _ms
    env.filters["duration"] = _duration
    env.filters["pretty"] = _pretty
    env.filters["seg"] = lambda s: quote(str(s), safe="")  # one URL path segment
    return env


def _secure(response: web.StreamResponse) -> web.StreamResponse:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response


def _local_page(target: str) -> bool:
    return target.startswith("/ui/") and not target.startswith("//") and "\\" not in target


def _redirect(location: str) -> web.StreamResponse:
    # Returned, not raised: the API's middleware turns raised HTTP errors into JSON.
    return _secure(web.Response(status=302, headers={"Location": location}))


class Ui:
    def __init__(self, data: UiData, settings: UiSettings) -> None:
        self.data = data
        self.settings = settings
        self.env = _environment()
        self.static = {p.name: p.read_bytes() for p in (HERE / "static").iterdir() if p.suffix in STATIC_TYPES}

    # -- plumbing ------------------------------------------------------------------------------

    def install(self, app: web.Application) -> None:
        # An id segment takes any character but '/' ('{x}' is a workflow id the API takes):
        # aiohttp's default segment pattern refuses '{' and '}'.
        app.router.add_get("/", self.root)
        app.router.add_get("/ui", self.root)
        app.router.add_get("/ui/", self.root)
        app.router.add_get("/ui/static/{name}", self.asset)
        app.router.add_get("/favicon.ico", self.favicon)
        app.router.add_get("/ui/login", self.page(self.login))
        app.router.add_get("/ui/dlq", self.page(self.dead_letters))
        app.router.add_get("/ui/audit", self.page(self.audit))
        app.router.add_get("/ui/namespaces/{namespace}/workflows", self.page(self.workflows))
        app.router.add_get("/ui/namespaces/{namespace}/workflows/{workflow_id:[^/]+}", self.page(self.workflow))
        app.router.add_get("/ui/namespaces/{namespace}/task-queues", self.page(self.task_queues))
        app.router.add_get("/ui/namespaces/{namespace}/task-queues/{task_queue:[^/]+}", self.page(self.task_queue))
        app.router.add_get("/ui/namespaces/{namespace}/schedules", self.page(self.schedules))
        app.router.add_post("/ui/api/namespaces/{namespace}/schedules/{schedule_id:[^/]+}/{action}",
                            self.action(self.schedule_action))
        app.router.add_post("/ui/api/session", self.action(self.sign_in))
        app.router.add_post("/ui/api/session/end", self.action(self.sign_out))
        app.router.add_post("/ui/api/namespaces/{namespace}/workflows/{workflow_id:[^/]+}/{action}",
                            self.action(self.act))
        app.router.add_post("/ui/api/dlq/redrive", self.action(self.redrive))

    def _authorization(self, request: web.Request) -> str | None:
        credential = request.cookies.get(COOKIE)
        return f"Bearer {credential}" if credential else None

    def render(self, request: web.Request, template: str, code: int = 200, **context: Any) -> web.StreamResponse:
        namespace = request.match_info.get("namespace") or request.query.get("namespace") or "default"
        context.setdefault("namespaces", [])
        context.setdefault("has_schedules", self.data.has(Feature.SCHEDULES))
        html = self.env.get_template(template).render(
            namespace=namespace, auth_on=self.data.auth is not None, signed_in=COOKIE in request.cookies,
            path=request.path_qs, **context)
        return _secure(web.Response(text=html, status=code, content_type="text/html"))

    def page(self, handler: Page) -> Page:
        async def page(request: web.Request) -> web.StreamResponse:
            try:
                ns = request.match_info.get("namespace")
                if ns is not None:
                    # Sign in first (401 before 404); and only a caller who may read there
                    # learns that it is not registered (the others get the page's 403).
                    principal = self.data.principal(self._authorization(request))
                    if principal is None or principal.allows(Permission.READ, ns):
                        await self.data.check_namespace(ns)
                return await handler(request)
            except FrontendError as exc:
                if exc.status == 401 and handler != self.login:
                    return _redirect(f"/ui/login?next={quote(request.path_qs, safe='')}")
                return self.error_page(request, exc.status, exc.error, str(exc))
            except (KafkaError, TopicReadError) as exc:
                return self.error_page(request, 503, "Unavailable", f"the broker is unavailable: {exc}")
            except outage.DATABASE_TRANSIENT:
                return self.error_page(request, 503, "Unavailable",
                                       "the database is unavailable; this page retries when reloaded")
        return page

    def action(self, handler: Callable[[web.Request, dict[str, Any]],
                                       Awaitable[dict[str, Any] | web.Response]]) -> Page:
        async def action(request: web.Request) -> web.StreamResponse:
            # CSRF: only the page's script sends this header and a JSON body; forms cannot.
            if request.headers.get(CSRF_HEADER) != "1" or request.content_type != "application/json":
                return _secure(web.json_response(
                    {"error": "Forbidden", "message": f"UI actions need the {CSRF_HEADER} header and a JSON body"},
                    status=403))
            try:
                body = await request.json()
            except ValueError:
                body = None
            try:
                if not isinstance(body, dict):
                    raise InvalidArgument("the body must be a JSON object")
                answer = await handler(request, body)
                return _secure(answer if isinstance(answer, web.Response) else web.json_response(answer))
            except FrontendError as exc:  # its headers too: a 503's Retry-After, as the API's
                return _secure(web.json_response(exc.body(), status=exc.status, headers=exc.headers() or None))
            except DeadLetterNotFound as exc:
                return _secure(web.json_response({"error": "NotFound", "message": str(exc)}, status=404))
            except (KafkaError, TopicReadError) as exc:
                return _secure(web.json_response({"error": "Unavailable", "message": str(exc)}, status=503,
                                                 headers={"Retry-After": RETRY_AFTER_S}))
            # A database outage goes on to the API's middleware, which answers it 503 with Retry-After.
        return action

    def landing(self, request: web.Request) -> str | None:
        """The workflows page the caller may read: ``default``'s, else that of the first
        namespace (by name) it has a read grant in; None when it may read none (or has not
        signed in: 401)."""
        principal = self.data.principal(self._authorization(request))
        if principal is None or principal.allows(Permission.READ, "default"):
            return "/ui/namespaces/default/workflows"
        granted = sorted({g.namespace for g in principal.grants
                          if g.namespace != "*" and principal.allows(Permission.READ, g.namespace)})
        return f"/ui/namespaces/{quote(granted[0], safe='')}/workflows" if granted else None

    def error_page(self, request: web.Request, status: int, error: str, message: str) -> web.StreamResponse:
        """An error page whose link leads somewhere the caller may go: after a 403, to a
        namespace it may read (never back to the page that refused it)."""
        ns = request.match_info.get("namespace") or request.query.get("namespace") or "default"
        back: str | None = f"/ui/namespaces/{quote(ns, safe='')}/workflows"
        # A 503 may link to itself (reloading is the retry); a 403 or 404 there would loop.
        if status == 403 or (back == request.path and status != 503):
            try:
                back = self.landing(request)
            except FrontendError:
                back = None
        if back == request.path and status != 503:
            back = None
        page = self.render(request, "error.html", status, error=error, message=message, back=back)
        if status == 503:  # as the API's: the database or broker may be back in a moment
            page.headers["Retry-After"] = RETRY_AFTER_S
        return page

    async def root(self, request: web.Request) -> web.StreamResponse:
        """``/`` and the forms without a path of their own: namespace switch, open by id.
        Without a namespace: one the caller may read (sign-in lands here without ``next``)."""
        asked = request.query.get("namespace", "").strip()
        wid = request.query.get("workflow_id", "").strip()
        if asked or wid:
            ns = quote(asked or "default", safe="")
            if wid:
                return _redirect(f"/ui/namespaces/{ns}/workflows/{quote(wid, safe='')}")
            return _redirect(f"/ui/namespaces/{ns}/workflows")
        try:
            landing = self.landing(request)
        except FrontendError as exc:
            if exc.status == 401:
                return _redirect("/ui/login")
            return self.error_page(request, exc.status, exc.error, str(exc))
        if landing is None:
            return self.error_page(request, 403, PermissionDenied.error,
                                   "these credentials grant reading no namespace; sign in with others")
        return _redirect(landing)

    async def asset(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        body = self.static.get(name)
        if body is None:
            raise web.HTTPNotFound()
        response = web.Response(body=body, content_type=STATIC_TYPES[Path(name).suffix])
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    async def favicon(self, request: web.Request) -> web.StreamResponse:
        """Browsers ask for /favicon.ico on every site whatever a page links: nothing there
        (204, cached a day), rather than a 404 in every log; pages link favicon.svg."""
        response = _secure(web.Response(status=204))
        response.headers["Cache-Control"] = "public, max-age=86400"
        return response

    # -- pages ------------------------------------------------------------------------------------

    async def login(self, request: web.Request) -> web.StreamResponse:
        # Back to a page of this UI only: never an address elsewhere (an open redirect).
        after = request.query.get("next", "")
        return self.render(request, "login.html", next=after if _local_page(after) else "/ui/")

    async def workflows(self, request: web.Request) -> web.StreamResponse:
        ns = request.match_info["namespace"]
        auth = self._authorization(request)
        self.data.principal(auth)  # sign in first, whatever visibility says
        search = Search(request.query.get("query", "").strip(), request.query.get("status", "").strip(),
                        request.query.get("type", "").strip())
        try:
            page = await self.data.list_workflows(auth, ns, search, PAGE_SIZE, request.query.get("next_page_token"))
            counts = await self.data.count_by_status(auth, ns, search) if page is not None else None
            error = ""
        except InvalidArgument as exc:  # a query not in the language: say why next to the box
            page, counts, error = WorkflowPage([], None), None, str(exc)
        statuses = sorted({*STATUSES, *(counts or {})} - {"All"})
        return self.render(request, "workflows.html", page=page, counts=counts, query=search.query,
                           status=search.status, wtype=search.workflow_type, full_query=search.list_query(),
                           statuses=statuses, refresh_s=REFRESH_S, error=error,
                           namespaces=await self.data.namespaces(auth))

    async def workflow(self, request: web.Request) -> web.StreamResponse:
        ns, wid = request.match_info["namespace"], request.match_info["workflow_id"]
        auth = self._authorization(request)
        run = await self.data.describe(auth, ns, wid, request.query.get("run_id") or None)
        events, truncated = await self.data.history(auth, ns, wid, str(run["run_id"]))
        pending = [int(a.get("scheduled_event_id", 0)) for a in run.get("pending_activities") or []]
        now = int(time.time() * 1000)
        lanes = timeline.lanes(events, pending)
        bars, t0, t1 = timeline.layout(lanes, now if run.get("status") == "Running" else int(run.get("close_time")
                                                                                              or now))
        started = events[0].get("attributes") or {} if events else {}
        closing = events[-1] if events and run.get("status") != "Running" else None
        start_record = await self.data.start_record(ns, wid, str(run["run_id"]),
                                                    with_trace=bool(self.settings.trace_ui_url))
        trace_url = ""
        if start_record is not None and start_record.trace_id and self.settings.trace_ui_url:
            trace_url = self.settings.trace_ui_url.replace("{trace_id}", start_record.trace_id)
        actions = [a for a in Action if self.data.has(a.feature)]
        check = None
        if request.query.get("verify") == "chain":
            check = await self.data.verify_chain(auth, ns, wid, str(run["run_id"]))
        verdict = await self.data.run_verdict(auth, ns, str(run["run_id"]))
        return self.render(request, "workflow.html", run=run, events=events, truncated=truncated, bars=bars,
                           t0=t0, t1=t1, started=started, closing=closing, start_record=start_record,
                           trace_url=trace_url, actions=actions, now_ms=now,
                           hints=diagnosis.hints(run, events, now), chain_check=check, verdict=verdict,
                           stack_trace_query=STACK_TRACE_QUERY if Action.QUERY in actions else None,
                           events_json=json.dumps(events, indent=2, ensure_ascii=False))

    async def task_queues(self, request: web.Request) -> web.StreamResponse:
        ns = request.match_info["namespace"]
        queues = await self.data.task_queues(self._authorization(request), ns)
        return self.render(request, "task_queues.html", queues=queues, knows_pollers=self.data.knows_pollers,
                           now_ms=int(time.time() * 1000))

    async def task_queue(self, request: web.Request) -> web.StreamResponse:
        ns, name = request.match_info["namespace"], request.match_info["task_queue"]
        queue = await self.data.task_queue(self._authorization(request), ns, name)
        return self.render(request, "task_queue.html", queue=queue, now_ms=int(time.time() * 1000))

    async def schedules(self, request: web.Request) -> web.StreamResponse:
        schedules = await self.data.schedules(self._authorization(request), request.match_info["namespace"])
        if schedules is None:
            raise NotFound("this frontend has no schedules")
        actions = [a for a in ScheduleAction if self.data.has(a.feature)]
        return self.render(request, "schedules.html", schedules=schedules, actions=actions)

    async def dead_letters(self, request: web.Request) -> web.StreamResponse:
        entries = await self.data.dead_letters(self._authorization(request))
        letters = [(e, e.key.decode("utf-8", "replace") if e.key else "") for e in entries]
        return self.render(request, "dlq.html", letters=letters)

    async def audit(self, request: web.Request) -> web.StreamResponse:
        verifications, divergences = await self.data.audit_status(self._authorization(request))
        return self.render(request, "audit.html", verifications=verifications, divergences=divergences)

    # -- actions -----------------------------------------------------------------------------------

    async def sign_in(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        credential = body.get("credential")
        if not isinstance(credential, str) or not credential.strip():
            raise InvalidArgument("give an API key or a JWT", field="credential")
        principal = self.data.principal(f"Bearer {credential.strip()}")  # 401 if it does not verify
        response = web.json_response({"signed_in": principal.name if principal else ""})
        # HttpOnly: no script (nor an injected one) reads it; Strict: no other site sends it.
        response.set_cookie(COOKIE, credential.strip(), path="/ui", httponly=True, samesite="Strict",
                            secure=request.secure)
        return response

    async def sign_out(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        response = web.json_response({})
        response.del_cookie(COOKIE, path="/ui")
        return response

    async def act(self, request: web.Request, body: dict[str, Any]) -> dict[str, Any]:
        try:
            action = Action(request.match_info["action"])
        except ValueError:
            raise InvalidArgument(f"unknown action {request.match_info['action']!r}") from None
        return await self.data.act(self._authorization(request), action.feature, request.match_info["namespace"],
                                   request.match_info["workflow_id"], body)

    async def schedule_action(self, request: web.Request, body: dict[str, Any]) -> dict[str, Any]:
        try:
            action = ScheduleAction(request.match_info["action"])
        except ValueError:
            raise InvalidArgument(f"unknown action {request.match_info['action']!r}") from None
        return await self.data.schedule_action(self._authorization(request), action.feature,
                                               request.match_info["namespace"], request.match_info["schedule_id"],
                                               body)

    async def redrive(self, request: web.Request, body: dict[str, Any]) -> dict[str, Any]:
        offsets = body.get("offsets")
        # type(): JSON true is a Python int (1), and re-drove the dead letter at offset 1.
        if not isinstance(offsets, list) or not offsets or not all(type(o) is int and o >= 0 for o in offsets):
            raise InvalidArgument("offsets must be a non-empty list of kadence.dlq offsets", field="offsets")
        done = await self.data.redrive(self._authorization(request), offsets)
        return {"redriven": [{"dlq_offset": e.dlq_offset, "where": e.where} for e in done]}


def install_ui(app: web.Application, data: UiData, settings: UiSettings | None = None) -> Ui:
    ui = Ui(data, settings or UiSettings.from_env())
    # Operations served beside the workflow handlers' table (namespaces, schedules): found by
    # method and path among the app's routes, whose handlers bear the operation's name.
    by_path = {f"{NAMESPACES_PATH}/{{namespace}}{f.value[1]}": f for f in Feature}
    for route in app.router.routes():
        canonical = route.resource.canonical if route.resource is not None else ""
        name = getattr(route.handler, "__name__", "")
        if route.method == "GET" and canonical == NAMESPACES_PATH:
            data.namespaces_operation = name
        feature = by_path.get(canonical)
        if feature is not None and feature.value[0] == route.method:
            data.found_route(feature, name)
    ui.install(app)
    return ui


__all__ = ["Action", "Ui", "UiSettings", "UnauthenticatedUi", "install_ui"]
