"""AsyncActivityHandle: what each call sends (the token, the converted payload, and
``current_attempt`` so a stale token is refused), and a heartbeat answered with
``cancel_requested`` raising AsyncActivityCancelledError."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from kadence import Client
from kadence.exceptions import ApplicationError, AsyncActivityCancelledError

pytestmark = pytest.mark.timeout(10)


class Transport:
    def __init__(self, answer: dict[str, Any] | None = None) -> None:
        self.answer = answer or {}
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def call(self, method: str, path: str, *, body: Mapping[str, Any] | None = None,
                   params: Mapping[str, Any] | None = None, timeout: float | None = None) -> dict[str, Any]:
        self.calls.append((path, dict(body or {})))
        return self.answer

    async def close(self) -> None:
        pass


def _handle(transport: Transport) -> Any:
    client = Client(transport, identity="outside")
    return client.get_async_activity_handle(task_token="tok")


async def test_each_call_sends_the_token_its_payload_and_asks_for_the_current_attempt() -> None:
    transport = Transport()
    handle = _handle(transport)
    await handle.complete({"n": 1})
    await handle.fail(ApplicationError("boom", type="Boom"), last_heartbeat_details=[3])
    await handle.heartbeat("p", 2)
    await handle.report_cancellation("why")
    paths = [path for path, _ in transport.calls]
    assert paths == ["/activity-tasks/complete", "/activity-tasks/fail", "/activity-tasks/heartbeat",
                     "/activity-tasks/cancel"]
    for _, body in transport.calls:
        assert body["task_token"] == "tok" and body["current_attempt"] is True and body["identity"] == "outside"
    complete, fail, heartbeat, cancel = (body for _, body in transport.calls)
    assert json.loads(complete["result"]) == {"n": 1}
    assert fail["failure"]["type"] == "Boom" and json.loads(fail["last_heartbeat_details"]) == [3]
    assert json.loads(heartbeat["details"]) == ["p", 2]
    assert json.loads(cancel["details"]) == ["why"]


async def test_a_heartbeat_answered_cancel_requested_raises() -> None:
    with pytest.raises(AsyncActivityCancelledError):
        await _handle(Transport({"cancel_requested": True})).heartbeat()


def test_an_empty_token_is_refused() -> None:
    with pytest.raises(ValueError, match="task_token"):
        Client(Transport()).get_async_activity_handle(task_token="")
