"""Completing an activity from outside its worker: :class:`AsyncActivityHandle`.

An activity that called ``activity.raise_complete_async()`` stays running after its
function returned; whoever holds its ``info().task_token`` and a client reports how it ends
(or heartbeats it) here. Every call asks the frontend to check that the token's attempt is
still the running one, so that a stale token (the attempt timed out, was retried, or its
run closed) is refused with :class:`~kadence.ActivityNotFoundError` (404 ``ActivityNotFound``)
instead of being dropped quietly; by ids, the same error says no attempt runs now. Each call
is retried as a start is (unreachable, 503/504, 429), for the same attempt: a retry of an
answer that was taken but whose reply was lost is answered ok, as the first try would have been.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from kadence._failure import failure_from_exception
from kadence._http import path_segment
from kadence._retry import retrying, unavailable_or_throttled
from kadence.converter import encode_payload
from kadence.exceptions import ActivityNotFoundError, AsyncActivityCancelledError, WorkflowNotFoundError

if TYPE_CHECKING:
    from kadence._client import Client

__all__ = ["AsyncActivityHandle"]


@contextlib.contextmanager
def _activity_not_found() -> Iterator[None]:
    """A frontend of an earlier build answers a stale attempt with the general 404 ``NotFound``
    (which the SDK reads as WorkflowNotFoundError): on these calls it means the activity."""
    try:
        yield
    except WorkflowNotFoundError as err:
        if err.error_type != "NotFound":
            raise  # WorkflowNotFound: the workflow itself is not there
        raise ActivityNotFoundError(err.status, "ActivityNotFound", err.message, err.field) from err


class AsyncActivityHandle:
    """One activity attempt, by its task token, or the running attempt of an activity, by
    its workflow id, run id (the latest run when None) and activity id
    (``client.get_async_activity_handle``)."""

    def __init__(self, client: Client, task_token: str | None = None, *, workflow_id: str | None = None,
                 run_id: str | None = None, activity_id: str | None = None) -> None:
        if (task_token is None) == (workflow_id is None and activity_id is None):
            raise ValueError("give either task_token or workflow_id and activity_id")
        if task_token is not None and not task_token:
            raise ValueError("task_token must not be empty")
        if task_token is None and not (workflow_id and activity_id):
            raise ValueError("by ids, both workflow_id and activity_id are needed")
        self._client = client
        self.task_token = task_token
        self._ids = (workflow_id or "", run_id, activity_id or "")

    def __repr__(self) -> str:
        if self.task_token is not None:
            return f"AsyncActivityHandle(task_token={self.task_token[:16]!r}...)"
        workflow_id, run_id, activity_id = self._ids
        return f"AsyncActivityHandle(workflow_id={workflow_id!r}, run_id={run_id!r}, activity_id={activity_id!r})"

    async def _token(self) -> str:
        """The token given, or that of the activity's attempt running now (asked each call:
        a retry's new attempt has a new one)."""
        if self.task_token is not None:
            return self.task_token
        workflow_id, run_id, activity_id = self._ids
        client = self._client
        path = f"/workflows/{path_segment(workflow_id)}/activities/{path_segment(activity_id)}/task-token"
        with _activity_not_found():  # a read: retried as any
            answer = await retrying(
                lambda: client.transport.call("GET", path, params={"run_id": run_id} if run_id else None),
                backoff=client.retry, retry_if=unavailable_or_throttled, what=f"task token of {self!r}")
        return str(answer["task_token"])

    async def _details(self, details: Sequence[Any], what: str) -> str | None:
        converter = self._client.data_converter
        return await encode_payload(converter.payload_codec, converter.encode_args(details, what=what), args=True)

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        # The token is asked once per call: every try answers the same attempt. A try whose
        # answer was lost after it ended the attempt is answered ok on its retry (the
        # frontend finds the attempt ended with this very answer); a heartbeat repeated
        # records the same details again.
        body = {"task_token": await self._token(), "identity": self._client.identity, "current_attempt": True, **body}
        client = self._client
        with _activity_not_found():
            answer = await retrying(lambda: client.transport.call("POST", path, body=body), backoff=client.retry,
                                    retry_if=unavailable_or_throttled, what=f"{path.rsplit('/', 1)[-1]} of {self!r}")
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
