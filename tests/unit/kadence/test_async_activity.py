"""AsyncActivityHandle: what each call sends (the token, the converted payload, and
``current_attempt`` so a stale token is refused), a heartbeat answered with
``cancel_requested`` raising AsyncActivityCancelledError, and a stale attempt raising
ActivityNotFoundError (a missing workflow: WorkflowNotFoundError)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from kadence import ActivityNotFoundError, Client, WorkflowNotFoundError
from kadence._http import error_from_response
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


class ByIds(Transport):
    """Answers the token look-up with a new token each time (a new attempt each call)."""

    async def call(self, method: str, path: str, *, body: Mapping[str, Any] | None = None,
                   params: Mapping[str, Any] | None = None, timeout: float | None = None) -> dict[str, Any]:
        await super().call(method, path, body=body or params, params=params, timeout=timeout)
        return {"task_token": f"tok-{len(self.calls)}"} if method == "GET" else {}


async def test_by_ids_each_call_asks_for_the_running_attempts_token() -> None:
    transport = ByIds()
    handle = Client(transport).get_async_activity_handle(workflow_id="w/1", run_id="r", activity_id="7")
    await handle.heartbeat()
    await handle.complete(1)
    paths = [path for path, _ in transport.calls]
    assert paths == ["/workflows/w%2F1/activities/7/task-token", "/activity-tasks/heartbeat",
                     "/workflows/w%2F1/activities/7/task-token", "/activity-tasks/complete"]
    assert transport.calls[0][1] == {"run_id": "r"}
    assert [body["task_token"] for _, body in transport.calls[1::2]] == ["tok-1", "tok-3"]


@pytest.mark.parametrize("ids", [{}, {"task_token": "t", "workflow_id": "w", "activity_id": "1"},
                                 {"workflow_id": "w"}, {"activity_id": "1"}])
def test_either_a_token_or_both_ids_are_needed(ids: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        Client(Transport()).get_async_activity_handle(**ids)


class Refusing(Transport):
    """Answers every call with the error a frontend sends for ``body``."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__()
        self.refusal = (status, body)

    async def call(self, method: str, path: str, *, body: Mapping[str, Any] | None = None,
                   params: Mapping[str, Any] | None = None, timeout: float | None = None) -> dict[str, Any]:
        raise error_from_response(*self.refusal)


STALE = {"error": "ActivityNotFound", "message": "activity attempt 1 ... (a stale task token)", "field": "task_token"}


@pytest.mark.parametrize("by", ["token", "ids"])
@pytest.mark.parametrize("answer", [STALE, {**STALE, "error": "NotFound"}], ids=["ActivityNotFound", "older-NotFound"])
async def test_a_stale_attempt_raises_activity_not_found_not_workflow_not_found(by: str,
                                                                                  answer: dict[str, Any]) -> None:
    # An earlier frontend answers the general NotFound; on these calls it means the activity too.
    client = Client(Refusing(404, answer))
    handle = (client.get_async_activity_handle(task_token="tok") if by == "token"
              else client.get_async_activity_handle(workflow_id="w", activity_id="a"))
    for call in (handle.complete(1), handle.fail(RuntimeError("x")), handle.heartbeat(), handle.report_cancellation()):
        with pytest.raises(ActivityNotFoundError) as raised:
            await call
        assert not isinstance(raised.value, WorkflowNotFoundError)
        assert (raised.value.status, raised.value.error_type, raised.value.field) == (404, "ActivityNotFound",
                                                                                         "task_token")


async def test_a_missing_workflow_stays_workflow_not_found() -> None:
    client = Client(Refusing(404, {"error": "WorkflowNotFound", "message": "gone", "field": "workflow_id"}))
    with pytest.raises(WorkflowNotFoundError):
        await client.get_async_activity_handle(workflow_id="w", activity_id="a").complete(1)
