"""A caller that hangs up mid-answer is not a database outage (services/frontend/app.py _answer)."""

from __future__ import annotations

import logging
from unittest.mock import Mock

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from services.frontend.app import CALLER_GONE, _answer

pytestmark = pytest.mark.timeout(10)


def _request(closing: bool) -> web.Request:
    transport = Mock()
    transport.is_closing.return_value = closing
    return make_mocked_request("GET", "/api/v1/namespaces/default/workflows/w/result", transport=transport)


async def _raises(request: web.Request) -> web.StreamResponse:
    raise ConnectionResetError("Cannot write to closing transport")


async def test_a_write_to_a_caller_that_left_is_not_called_a_database_outage(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="services.frontend.app"):
        response = await _answer(_request(closing=True), _raises)
    assert response.status == CALLER_GONE
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name == "services.frontend.app"]


async def test_a_reset_with_the_caller_still_there_is_still_an_outage(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="services.frontend.app"):
        response = await _answer(_request(closing=False), _raises)
    assert response.status == 503 and response.headers["Retry-After"]
    assert any("database unavailable" in r.getMessage() for r in caplog.records)
