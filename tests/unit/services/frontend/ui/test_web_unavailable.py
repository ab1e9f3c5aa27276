"""Every 503 of the web UI says when to come back (Retry-After), as the API's do (decision
0019): its pages (HTML) and its actions (JSON, the page's script), whatever made it: a
dependency or history not answering in time (Unavailable, Busy), the broker, the database,
a bounded read that gave up. Driven through the API's middleware answer, as served."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any
from unittest.mock import Mock

import pytest
from aiohttp import StreamReader, web
from aiohttp.test_utils import make_mocked_request
from aiokafka.errors import KafkaConnectionError

from services.common.read_bound import ReadTimedOut
from services.frontend.app import _answer
from services.frontend.errors import Busy, Unavailable
from services.frontend.ui.web import CSRF_HEADER, Ui, UiSettings

pytestmark = pytest.mark.timeout(10)

OUTAGES = [Busy("history did not answer"), Unavailable("matching is unavailable"),
           KafkaConnectionError("no broker"), ConnectionRefusedError("no database"), ReadTimedOut("no connection")]
IDS = ["busy", "dependency", "broker", "database", "read-bound"]


def _body(data: bytes) -> StreamReader:
    body = StreamReader(Mock(), 2**16, loop=asyncio.get_running_loop())
    body.feed_data(data)
    body.feed_eof()
    return body


def _ui() -> Ui:
    data = SimpleNamespace(auth=None, has=lambda feature: False, principal=lambda authorization: None)
    return Ui(data, UiSettings())  # type: ignore[arg-type]


def _transport() -> Mock:
    transport = Mock()
    transport.is_closing.return_value = False
    return transport


def _raising(exc: BaseException) -> Callable[..., Awaitable[Any]]:
    async def handler(*args: Any) -> Any:
        raise exc
    return handler


@pytest.mark.parametrize("exc", OUTAGES, ids=IDS)
async def test_a_503_page_says_when_to_come_back(exc: BaseException) -> None:
    request = make_mocked_request("GET", "/ui/dlq", transport=_transport())
    response = await _answer(request, _ui().page(_raising(exc)))
    assert response.status == 503
    assert response.headers.get("Retry-After") == "1"
    assert response.content_type == "text/html"


@pytest.mark.parametrize("exc", OUTAGES, ids=IDS)
async def test_a_503_action_says_when_to_come_back(exc: BaseException) -> None:
    request = make_mocked_request(
        "POST", "/ui/api/dlq/redrive", transport=_transport(), payload=_body(b'{"offsets": [1]}'),
        headers={CSRF_HEADER: "1", "Content-Type": "application/json"})
    response = await _answer(request, _ui().action(_raising(exc)))
    assert response.status == 503
    assert response.headers.get("Retry-After") == "1"
    assert isinstance(response, web.Response) and response.text is not None
    assert '"error": "Unavailable"' in response.text
