"""Every 503 the API answers says when to come back (Retry-After), whatever made it: the
broker, the database (a bounded read that timed out too), a dependency, or history not
answering within the bound (Busy); a client then has one rule for them all
(docs/protocol.md, "Errors")."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from unittest.mock import Mock

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from aiokafka.errors import KafkaConnectionError

from services.common.read_bound import ReadTimedOut
from services.frontend.app import _answer
from services.frontend.engine import _unavailable
from services.frontend.errors import Busy, Unavailable

pytestmark = pytest.mark.timeout(10)


def _request() -> web.Request:
    transport = Mock()
    transport.is_closing.return_value = False
    return make_mocked_request("POST", "/api/v1/namespaces/default/workflows/w/terminate", transport=transport)


def _raising(exc: BaseException) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise exc
    return handler


@pytest.mark.parametrize("exc", [
    Busy("history did not answer"), Unavailable("matching is unavailable"), _unavailable(TimeoutError()),
    KafkaConnectionError("no broker"), ConnectionRefusedError("no database"), ReadTimedOut("no connection"),
], ids=["busy", "dependency", "broker-unacknowledged", "broker", "database", "read-bound"])
async def test_every_503_says_when_to_come_back(exc: BaseException) -> None:
    response = await _answer(_request(), _raising(exc))
    assert response.status == 503
    assert response.headers.get("Retry-After") == "1"
