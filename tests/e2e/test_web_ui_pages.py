"""The web UI's pages and actions over a stand-in for the API handlers: escaping, the
security headers, the CSRF guard, the sign-in cookie, authorization and feature detection.
(Loopback HTTP, no broker; the browser tests in test_web_ui.py run it against a whole cluster.)"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, cast
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.frontend.auth import Authenticator, api_key_entry
from services.frontend.errors import FrontendError, InvalidArgument, WorkflowNotFound
from services.frontend.handlers import ROUTES, Handlers
from services.frontend.ui import Feature, UiData, UiSettings, detect, install_ui

EVIL = "<script>alert(1)</script>"
VISIBILITY = [("GET", "/workflows", "list_workflows"), ("GET", "/workflows/count", "count_workflows")]
JSON_ACTION = {"X-Kadence-UI": "1"}
# The route table without visibility (whether or not this frontend's table has it).
BASE = [r for r in ROUTES if (r[0], r[1]) not in (Feature.LIST.value, Feature.COUNT.value)]


class VisibilityMissing(FrontendError):
    status = 501
    error = "NotImplemented"


class StubHandlers:
    """Answers as the frontend's handlers do, and records the actions."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Mapping[str, str], dict[str, Any]]] = []

    async def describe(self, path: Mapping[str, str], query: Mapping[str, str], body: dict[str, Any]) -> Any:
        if path["workflow_id"] == "missing":
            raise WorkflowNotFound("workflow 'missing' was not found")
        return 200, {"workflow_id": path["workflow_id"], "run_id": "r1", "workflow_type": EVIL, "task_queue": "q",
                     "status": "Running", "start_time": 1000, "close_time": None, "history_length": 1,
                     "pending_activities": [{"scheduled_event_id": 5, "activity_type": "charge", "activity_id": "1",
                                             "attempt": 3, "state": "Scheduled",
                                             "last_failure": {"type": "ValueError", "message": EVIL}}],
                     "pending_timers": []}

    async def history(self, path: Mapping[str, str], query: Mapping[str, str], body: dict[str, Any]) -> Any:
        return 200, {"events": [{"event_id": 1, "event_time": 1000, "event_type": "WorkflowExecutionStarted",
                                 "attributes": {"workflow_type": EVIL, "input": f'["{EVIL}"]'}}],
                     "next_page_token": None}

    async def list_namespaces(self, path: Mapping[str, str], query: Mapping[str, str], body: dict[str, Any]) -> Any:
        return 200, {"namespaces": [{"name": "shop"}, {"name": "default"}]}

    async def terminate(self, path: Mapping[str, str], query: Mapping[str, str], body: dict[str, Any]) -> Any:
        self.calls.append(("terminate", path, body))
        return 200, {}

    async def list_workflows(self, path: Mapping[str, str], query: Mapping[str, str], body: dict[str, Any]) -> Any:
        self.calls.append(("list_workflows", query, body))
        if path["namespace"] == "novis":
            raise VisibilityMissing("this frontend has no visibility store")
        if "bad" in query.get("query", ""):
            raise InvalidArgument("expected a value, found 'bad'", field="query")
        return 200, {"executions": [{"workflow_id": EVIL, "run_id": "r1", "workflow_type": "T", "task_queue": "q",
                                     "status": "Failed", "start_time": 1000, "close_time": 2000,
                                     "history_length": 9}], "next_page_token": "page-2"}

    async def count_workflows(self, path: Mapping[str, str], query: Mapping[str, str], body: dict[str, Any]) -> Any:
        self.calls.append(("count_workflows", query, body))
        return 200, {"count": 3, "groups": [{"group_values": ["Running"], "count": 2},
                                            {"group_values": ["Failed"], "count": 1}]}


class StubAdmin:
    """Namespace administration on handlers of its own, as another branch serves it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Mapping[str, str], dict[str, Any]]] = []

    async def list_schedules(self, path: Mapping[str, str], query: Mapping[str, str], body: dict[str, Any]) -> Any:
        return 200, {"schedules": [{"schedule_id": EVIL, "spec": {"interval": "1h", "time_zone": "UTC"},
                                    "action": {"workflow_type": "Report", "task_queue": "q"}, "paused": False,
                                    "note": "", "next_action_times": ["2026-12-06T10:00:00Z"],
                                    "last_workflow_id": "report-1", "actions_started": 4, "actions_skipped": 1}]}

    async def pause_schedule(self, path: Mapping[str, str], query: Mapping[str, str], body: dict[str, Any]) -> Any:
        self.calls.append(("pause_schedule", path, body))
        return 200, {}


async def _client(stub: StubHandlers, routes: list[tuple[str, str, str]],
                  auth: Authenticator | None = None, *,
                  namespaces: bool = False, admin: StubAdmin | None = None) -> TestClient[web.Request, web.Application]:
    app = web.Application()
    if admin is not None:  # routes beside the table: found by method and path, named by operation
        for method, path, name in [("GET", "/schedules", "list_schedules"),
                                   ("POST", "/schedules/{schedule_id}/pause", "pause_schedule")]:
            async def route(request: web.Request) -> web.Response:
                return web.json_response({})

            route.__name__ = name
            app.router.add_route(method, "/api/v1/namespaces/{namespace}" + path, route)
    if namespaces:  # as the API would serve it: a route whose handler bears the operation's name
        async def list_namespaces(request: web.Request) -> web.Response:
            return web.json_response({})

        app.router.add_get("/api/v1/namespaces", list_namespaces)
    install_ui(app, UiData(cast(Handlers, stub), auth, features=detect(routes), admin_handlers=admin), UiSettings())
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest.fixture
def stub() -> StubHandlers:
    return StubHandlers()


@pytest.fixture
async def ui(stub: StubHandlers) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    client = await _client(stub, [*BASE, *VISIBILITY])
    yield client
    await client.close()


def test_features_are_detected_from_the_route_table() -> None:
    assert set(detect(BASE)) >= {Feature.SIGNAL, Feature.TERMINATE}
    assert not set(detect(BASE)) & {Feature.LIST, Feature.COUNT}
    found = detect([*BASE, *VISIBILITY, ("POST", "/workflows/{workflow_id}/cancel", "cancel")])
    assert found[Feature.LIST] == "list_workflows" and found[Feature.CANCEL] == "cancel"


async def test_the_list_runs_the_query_with_filters_and_escapes_what_it_shows(
        ui: TestClient[web.Request, web.Application], stub: StubHandlers) -> None:
    root = await ui.get("/", allow_redirects=False)
    assert (root.status, root.headers["Location"]) == (302, "/ui/namespaces/default/workflows")
    answer = await ui.get("/ui/namespaces/default/workflows", params={"query": "WorkflowType = 'T'",
                                                                      "status": "Failed"})
    html = await answer.text()
    assert answer.status == 200
    assert EVIL not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert stub.calls[0][1]["query"] == "(WorkflowType = 'T') AND ExecutionStatus = 'Failed'"
    assert stub.calls[1][1]["query"] == "(WorkflowType = 'T') GROUP BY ExecutionStatus"
    assert "Running 2" in html and "Failed 1" in html and "next_page_token=page-2" in html
    csp = answer.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in csp and "script-src 'self'" in csp


async def test_a_count_by_status_links_to_the_runs_it_counted(
        ui: TestClient[web.Request, web.Application], stub: StubHandlers) -> None:
    # The counts are taken under the query and the type filter: their links keep both.
    html = await (await ui.get("/ui/namespaces/default/workflows", params={"query": "TaskQueue = 'q'",
                                                                          "type": "Order"})).text()
    counted = stub.calls[-1][1]["query"]
    assert "WorkflowType = 'Order'" in counted
    link = html.split('<div class="counts" id="counts">', 1)[1].split('href="', 1)[1].split('"', 1)[0]
    listed = await (await ui.get("/ui/namespaces/default/workflows" + link.replace("&amp;", "&"))).text()
    shown = stub.calls[-2][1]["query"]
    assert listed and all(part in shown for part in ("TaskQueue = 'q'", "WorkflowType = 'Order'",
                                                     "ExecutionStatus = 'Failed'"))


async def test_a_bad_query_is_explained_and_a_store_less_visibility_is_not_enabled(
        ui: TestClient[web.Request, web.Application]) -> None:
    answer = await ui.get("/ui/namespaces/default/workflows", params={"query": "WorkflowType = bad"})
    html = await answer.text()
    assert answer.status == 200 and "expected a value, found &#39;bad&#39;" in html
    html = await (await ui.get("/ui/namespaces/novis/workflows")).text()
    assert "Visibility is not enabled" in html


async def test_the_namespace_switcher_lists_namespaces_when_the_api_does(stub: StubHandlers) -> None:
    client = await _client(stub, BASE, namespaces=True)
    try:
        html = await (await client.get("/ui/namespaces/shop/workflows")).text()
        assert 'id="namespace-select"' in html
        assert '<option value="shop" selected>' in html and '<option value="default" >' in html
    finally:
        await client.close()
    client = await _client(stub, BASE)
    try:
        assert 'id="namespace-input"' in await (await client.get("/ui/namespaces/shop/workflows")).text()
    finally:
        await client.close()


async def test_without_visibility_the_list_says_so_and_a_run_opens_by_id(stub: StubHandlers) -> None:
    client = await _client(stub, BASE)
    try:
        html = await (await client.get("/ui/namespaces/default/workflows")).text()
        assert "Visibility is not enabled" in html
        opened = await client.get("/ui/", params={"namespace": "shop", "workflow_id": "a b"}, allow_redirects=False)
        assert opened.headers["Location"] == "/ui/namespaces/shop/workflows/a%20b"
    finally:
        await client.close()


async def test_the_run_page_escapes_payloads_failures_and_types(ui: TestClient[web.Request, web.Application]) -> None:
    answer = await ui.get("/ui/namespaces/default/workflows/w1")
    html = await answer.text()
    assert answer.status == 200 and "<script>alert" not in html
    assert "ValueError: &lt;script&gt;" in html  # the pending activity's last failure
    assert "keeps failing and is being retried: attempt 3" in html
    missing = await ui.get("/ui/namespaces/default/workflows/missing")
    assert missing.status == 404 and "was not found" in await missing.text()


async def test_actions_need_the_ui_header_and_json(ui: TestClient[web.Request, web.Application],
                                                  stub: StubHandlers) -> None:
    url = "/ui/api/namespaces/default/workflows/w1/terminate"
    assert (await ui.post(url, data={"reason": "csrf"})).status == 403  # a plain form post
    assert (await ui.post(url, json={"reason": "csrf"})).status == 403  # JSON without the header
    assert (await ui.post(url, data="[1]", headers={**JSON_ACTION, "Content-Type": "application/json"})).status == 400
    assert stub.calls == []
    answer = await ui.post(url, json={"reason": "done", "run_id": "r1"}, headers=JSON_ACTION)
    assert answer.status == 200
    assert stub.calls == [("terminate", {"namespace": "default", "workflow_id": "w1"},
                           {"reason": "done", "run_id": "r1", "identity": "web-ui"})]
    assert (await ui.post("/ui/api/namespaces/default/workflows/w1/cancel", json={}, headers=JSON_ACTION)).status == 404
    assert (await ui.post("/ui/api/namespaces/default/workflows/w1/explode", json={},
                          headers=JSON_ACTION)).status == 400


async def test_with_auth_the_ui_signs_in_to_an_httponly_cookie_and_authorizes_like_the_api(
        stub: StubHandlers) -> None:
    auth = Authenticator.from_mapping({"api_keys": [
        api_key_entry("ops", "ops-key", [{"namespace": "default", "permissions": ["read", "write"]}]),
        api_key_entry("viewer", "viewer-key", [{"namespace": "default", "permissions": ["read"]}]),
    ]})
    client = await _client(stub, BASE, auth)
    try:
        page = await client.get("/ui/namespaces/default/workflows/w1", allow_redirects=False)
        assert page.status == 302 and page.headers["Location"].startswith("/ui/login?next=")
        login = await (await client.get(page.headers["Location"])).text()
        assert 'data-next="/ui/namespaces/default/workflows/w1"' in login
        for elsewhere in ("https://evil.example/", "//evil.example/ui/", "javascript:alert(1)"):
            login = await (await client.get("/ui/login", params={"next": elsewhere})).text()
            assert 'data-next="/ui/"' in login
        refused = await client.post("/ui/api/session", json={"credential": "guessed"}, headers=JSON_ACTION)
        assert refused.status == 401
        signed = await client.post("/ui/api/session", json={"credential": "viewer-key"}, headers=JSON_ACTION)
        cookie = signed.headers["Set-Cookie"]
        assert signed.status == 200 and "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui" in cookie
        assert (await client.get("/ui/namespaces/default/workflows/w1")).status == 200
        assert (await client.get("/ui/namespaces/bank/workflows/w1")).status == 403
        assert (await client.get("/ui/dlq")).status == 403  # dead letters need admin in every namespace
        terminate = await client.post("/ui/api/namespaces/default/workflows/w1/terminate", json={},
                                      headers=JSON_ACTION)
        assert terminate.status == 403 and stub.calls == []  # read only: no terminate
        await client.post("/ui/api/session", json={"credential": "ops-key"}, headers=JSON_ACTION)
        terminate = await client.post("/ui/api/namespaces/default/workflows/w1/terminate", json={},
                                      headers=JSON_ACTION)
        assert terminate.status == 200 and stub.calls[0][2]["identity"] == "web-ui:ops"
        await client.post("/ui/api/session/end", json={}, headers=JSON_ACTION)
        assert (await client.get("/ui/namespaces/default/workflows/w1", allow_redirects=False)).status == 302
    finally:
        await client.close()


async def test_schedules_show_when_the_api_has_them_with_the_actions_it_has(stub: StubHandlers) -> None:
    client = await _client(stub, BASE)
    try:
        assert ">Schedules</a>" not in await (await client.get("/ui/namespaces/default/workflows")).text()
        assert (await client.get("/ui/namespaces/default/schedules")).status == 404
    finally:
        await client.close()
    admin = StubAdmin()
    client = await _client(stub, BASE, admin=admin)
    try:
        assert ">Schedules</a>" in await (await client.get("/ui/namespaces/default/workflows")).text()
        html = await (await client.get("/ui/namespaces/default/schedules")).text()
        assert "every 1h (UTC)" in html and "report-1" in html and EVIL not in html
        assert ">Pause</button>" in html and ">Trigger</button>" not in html  # no trigger route here
        answer = await client.post(f"/ui/api/namespaces/default/schedules/{_seg('s 1')}/pause",
                                   json={"note": "maintenance"}, headers=JSON_ACTION)
        assert answer.status == 200
        assert admin.calls == [("pause_schedule", {"namespace": "default", "schedule_id": "s 1"},
                                {"note": "maintenance"})]
        trigger = await client.post("/ui/api/namespaces/default/schedules/s1/trigger", json={}, headers=JSON_ACTION)
        assert trigger.status == 404
    finally:
        await client.close()


def _seg(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


DISGUISED = "invoice-7\u202e1-gpj.exe\x1b[2J"  # reads "invoice-7exe.jpg-1" and clears a terminal


class DisguisingHandlers(StubHandlers):
    """Ids, types and a search attribute value holding a bidi override and an escape sequence."""

    async def describe(self, path: Mapping[str, str], query: Mapping[str, str], body: dict[str, Any]) -> Any:
        status, run = await super().describe(path, query, body)
        return status, {**run, "run_id": "r\u202e1", "workflow_type": "Pay\u2066ment", "task_queue": "q\x07",
                        "pending_activities": []}

    async def history(self, path: Mapping[str, str], query: Mapping[str, str], body: dict[str, Any]) -> Any:
        status, answer = await super().history(path, query, body)
        upsert = {"event_id": 2, "event_time": 2000, "event_type": "UpsertWorkflowSearchAttributes",
                  "attributes": {"search_attributes": {"Customer": "acme\u202e"}}}
        return status, {**answer, "events": [*answer["events"], upsert]}

    async def list_workflows(self, path: Mapping[str, str], query: Mapping[str, str], body: dict[str, Any]) -> Any:
        self.calls.append(("list_workflows", query, body))
        return 200, {"executions": [{"workflow_id": DISGUISED, "run_id": "r\u202e1", "workflow_type": "Pay\u2066ment",
                                     "task_queue": "q", "status": "Running", "start_time": 1000, "close_time": None,
                                     "history_length": 2}], "next_page_token": None}


async def test_ids_types_and_values_show_their_control_characters_as_escapes() -> None:
    """HTML escaping leaves U+202E and ESC as they are: every {{ }} shows them as the CLI does
    (\\u202e, \\x1b), while a form still sends the run id and the filters as they are."""
    stub = DisguisingHandlers()
    client = await _client(stub, [*BASE, *VISIBILITY])
    try:
        listed = await client.get("/ui/namespaces/default/workflows", params={"type": "Pay\u2066ment"})
        html = await listed.text()
        assert listed.status == 200
        assert "invoice-7\\u202e1-gpj.exe\\x1b[2J" in html and "Pay\\u2066ment" in html
        assert 'name="type" value="Pay\u2066ment"' in html  # the filter as typed, sent again as it is
        rest = html.replace('value="Pay\u2066ment"', "")
        assert not [c for c in "\u202e\u2066\x1b" if c in rest], "a control character reached the page as it is"
        run = await client.get(f"/ui/namespaces/default/workflows/{quote(DISGUISED, safe='')}")
        html = await run.text()
        assert run.status == 200
        assert "invoice-7\\u202e1-gpj.exe\\x1b[2J" in html and "Pay\\u2066ment" in html and "q\\x07" in html
        assert "r\\u202e1" in html and "acme\\u202e" in html
        assert 'name="run_id" value="r\u202e1"' in html  # the actions name the run as it is
        rest = html.replace('value="r\u202e1"', "")
        assert not [c for c in "\u202e\u2066\x1b\x07" if c in rest], "a control character reached the page as it is"
    finally:
        await client.close()
