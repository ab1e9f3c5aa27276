"""Completing an activity from outside its worker: :class:`AsyncActivityHandle`.

An activity that called ``activity.raise_complete_async()`` stays running after its
function returned; whoever holds its ``info().task_token`` and a client reports how it ends
(or heartbeats it) here. Every call asks the frontend to check that the token's attempt is
still the running one, so that a stale token (the attempt timed out, was retried, or its
run closed) is refused with ``RPCError`` 404 ``NotFound`` instead of being dropped quietly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kadence._failure import failure_from_exception
from kadence.converter import encode_payload
from kadence.exceptions import AsyncActivityCancelledError

if TYPE_CHECKING:
    from kadence._client import Client

__all__ = ["AsyncActivityHandle"]


class AsyncActivityHandle:
    """One activity attempt, by its task token (``client.get_async_activity_handle``)."""

    def __init__(self, client: Client, task_token: str) -> None:
        if not task_token:
            raise ValueError("task_token must not be empty")
        self._client = client
        self.task_token = task_token

    def __repr__(self) -> str:
        return f"AsyncActivityHandle(task_token={self.task_token[:16]!r}...)"

    async def _details(self, details: Sequence[Any], what: str) -> str | None:
        converter = self._client.data_converter
        return await encode_payload(converter.payload_codec, converter.encode_args(details, what=what), args=True)

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        body = {"task_token": self.task_token, "identity": self._client.identity, "current_attempt": True, **body}
        # Not retried: a lost answer to a call that took effect would be refused as stale.
        answer = await self._client.transport.call("POST", path, body=body)
        return answer if isinstance(answer, dict) else {}

    async def heartbeat(self, *details: Any) -> None:
        """Record the attempt's progress (its heartbeat timeout starts again); ``details``
        reach the next attempt as ``info().heartbeat_details``. Raises
        AsyncActivityCancelledError when the workflow has cancelled the activity."""
        answer = await self._post("/activity-tasks/heartbeat",
                                  {"details": await self._details(details, "AsyncActivityHandle.heartbeat")})
        if answer.get("cancel_requested"):
            raise AsyncActivityCancelledError("the activity's cancellation was requested")

    async def complete(self, result: Any = None) -> None:
        """Complete the activity with ``result`` (converted as an activity's return value)."""
        converter = self._client.data_converter
        payload = await encode_payload(converter.payload_codec,
                                       converter.encode_value(result, what="AsyncActivityHandle.complete"))
        await self._post("/activity-tasks/complete", {"result": payload})

    async def fail(self, error: BaseException, *, last_heartbeat_details: Sequence[Any] = ()) -> None:
        """Fail the attempt with ``error`` (as if the activity had raised it): the workflow
        sees it as the ActivityError's cause, after the retry policy's attempts."""
        body: dict[str, Any] = {"failure": failure_from_exception(error)}
        if last_heartbeat_details:
            body["last_heartbeat_details"] = await self._details(last_heartbeat_details, "AsyncActivityHandle.fail")
        await self._post("/activity-tasks/fail", body)

    async def report_cancellation(self, *details: Any) -> None:
        """Report the attempt stopped on its cancel request (the activity ends canceled)."""
        await self._post("/activity-tasks/cancel",
                         {"details": await self._details(details, "AsyncActivityHandle.report_cancellation")})
