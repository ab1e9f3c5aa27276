"""Every 503 the frontend answers carries Retry-After (services/frontend/errors.py, app.py _answer):
a command the broker did not acknowledge within the bound (as while the broker is frozen)
was answered 503 without it, unlike the 503s for history's silence and the database's."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from aiokafka.errors import KafkaConnectionError

from services.frontend import errors
from services.frontend.app import _answer
from services.frontend.engine import _unavailable

pytestmark = pytest.mark.timeout(10)


def test_the_broker_not_acknowledging_a_command_says_when_to_come_back() -> None:
    refused = _unavailable(TimeoutError())
    assert refused.status == 503 and refused.headers() == {"Retry-After": errors.RETRY_AFTER_S}


def test_every_unavailable_error_says_when_to_come_back() -> None:
    for kind in (errors.Unavailable, errors.Busy):
        assert kind("down").headers()["Retry-After"] == errors.RETRY_AFTER_S


async def test_a_broker_error_reaching_the_answer_says_when_to_come_back() -> None:
    async def broker_down(request: web.Request) -> web.StreamResponse:
        raise KafkaConnectionError("no broker")

    response = await _answer(make_mocked_request("POST", "/api/v1/namespaces/default/workflows"), broker_down)
    assert response.status == 503 and response.headers["Retry-After"] == errors.RETRY_AFTER_S
