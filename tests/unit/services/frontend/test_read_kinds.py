"""Which share of the pool each call's reads count against (services/frontend/read_kinds.py),
and what a caller sees when a read gives up (services/frontend/app.py _answer)."""

from __future__ import annotations

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from services.common.read_bound import ReadTimedOut
from services.common.read_budgets import ReadKind
from services.frontend.admin import ADMIN_ROUTES
from services.frontend.app import _answer
from services.frontend.handlers import ROUTES
from services.frontend.read_kinds import READ_KINDS, read_kind
from services.frontend.task_queues import TASK_QUEUE_ROUTES

pytestmark = pytest.mark.timeout(10)


def test_replays_results_and_lookups_each_have_a_share_and_commands_none() -> None:
    assert read_kind("history") is read_kind("poll_workflow_tasks") is ReadKind.HISTORY
    assert read_kind("result") is read_kind("result_batch") is ReadKind.RESULTS
    assert read_kind("describe") is read_kind("list_workflows") is ReadKind.LOOKUPS
    assert read_kind("signal") is read_kind("start") is read_kind("query") is ReadKind.COMMANDS
    names = {name for _, _, name in (*ROUTES, *ADMIN_ROUTES, *TASK_QUEUE_ROUTES)}
    assert set(READ_KINDS) <= names  # no kind for a call that does not exist


async def _gives_up_on_a_share(request: web.Request) -> web.StreamResponse:
    raise ReadTimedOut("no database connection for history reads within 5 s: history reads may hold 5 of the"
                       " frontend's 12 connections, all in use", limit="history_reads", slots=5)


async def _gives_up_on_the_pool(request: web.Request) -> web.StreamResponse:
    raise ReadTimedOut("the database did not answer a read within 5 s")


async def test_a_read_that_gave_up_is_a_503_naming_its_cause_with_retry_after() -> None:
    request = make_mocked_request("GET", "/api/v1/namespaces/default/workflows/w/history")
    response = await _answer(request, _gives_up_on_a_share)
    assert isinstance(response, web.Response) and response.body is not None
    body = orjson.loads(response.text or "")
    assert response.status == 503 and response.headers["Retry-After"] == "1"
    assert body["error"] == "Unavailable" and "history reads may hold 5" in body["message"]
    assert (body["limit"], body["limit_value"], body["retry_after_ms"]) == ("history_reads", 5, 1000)
    response = await _answer(request, _gives_up_on_the_pool)
    assert isinstance(response, web.Response)
    body = orjson.loads(response.text or "")
    assert response.status == 503 and response.headers["Retry-After"] == "1"
    assert "did not answer a read within 5 s" in body["message"] and "limit" not in body
