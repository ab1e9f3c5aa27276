"""A worker's task answers, several to one HTTP call when they pile up.

A worker under load finishes many tasks at about the same time. ``AnswerBatcher`` wraps
the transport: an answer goes out at once, from the task that gives it, when fewer than
``max_in_flight`` answer calls are under way, and otherwise waits for one of them to return
and leaves with everything queued meanwhile, through ``POST /task-answers``. Nothing waits
on a timer or on a turn of the event loop, so a lone answer is on the wire before the task
that gave it yields; each caller still gets its own answer or its own error.
With tracing on every answer goes alone, carrying its own trace context.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from kadence import _tracing
from kadence._http import Transport, error_from_response

# path of the single-answer call -> its operation name in POST /task-answers
ANSWER_PATHS = {
    "/workflow-tasks/complete": "complete_workflow_task",
    "/workflow-tasks/fail": "fail_workflow_task",
    "/activity-tasks/complete": "complete_activity_task",
    "/activity-tasks/fail": "fail_activity_task",
}

_Pending = tuple[str, Mapping[str, Any], "asyncio.Future[dict[str, Any]]"]


class AnswerBatcher:
    """A Transport that sends task answers together; every other call passes straight through."""

    def __init__(self, transport: Transport, *, max_in_flight: int = 2, max_batch: int = 500) -> None:
        self._transport = transport
        self._max_in_flight = max_in_flight
        self._max_batch = max_batch
        self._pending: list[_Pending] = []
        self._in_flight = 0
        self._flushes: set[asyncio.Task[None]] = set()

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        if method != "POST" or path not in ANSWER_PATHS or body is None or _tracing.tracer() is not None:
            return await self._transport.call(method, path, body=body, params=params, timeout=timeout)
        if self._in_flight < self._max_in_flight and not self._pending:
            # Sent right here: a task in a flush of its own would put it behind whatever
            # else the loop runs first (such as the poller's next poll).
            self._in_flight += 1
            try:
                return await self._transport.call("POST", path, body=body)
            finally:
                self._done()
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending.append((path, body, fut))
        if self._in_flight < self._max_in_flight:
            self._flush_soon()
        return await fut

    async def close(self) -> None:
        """Nothing to close: the wrapped transport belongs to the client."""

    def _flush_soon(self) -> None:
        self._in_flight += 1
        task = asyncio.get_running_loop().create_task(self._flush())
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush(self) -> None:
        # Runs a loop turn after it was scheduled: answers queued meanwhile go along.
        batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
        try:
            await self._send([p for p in batch if not p[2].done()])
        finally:
            self._done()

    def _done(self) -> None:
        self._in_flight -= 1
        if self._pending and self._in_flight < self._max_in_flight:
            self._flush_soon()

    async def _send(self, batch: list[_Pending]) -> None:
        if not batch:
            return
        try:
            if len(batch) == 1:
                path, body, fut = batch[0]
                answer = await self._transport.call("POST", path, body=body)
                if not fut.done():
                    fut.set_result(answer)
                return
            reply = await self._transport.call("POST", "/task-answers", body={
                "answers": [{"operation": ANSWER_PATHS[path], "body": dict(body)} for path, body, _ in batch]})
        except Exception as err:  # noqa: BLE001 - the call failed as a whole: every answer in it failed
            for _, _, fut in batch:
                if not fut.done():
                    fut.set_exception(err)
            return
        results = reply.get("results")
        for i, (_, _, fut) in enumerate(batch):
            result = results[i] if isinstance(results, list) and i < len(results) else None
            if fut.done():
                continue
            if not isinstance(result, Mapping):
                fut.set_exception(error_from_response(502, {"error": "BadResponse",
                                                            "message": f"no result for answer {i}"}))
            elif int(result.get("status", 500)) >= 400:
                fut.set_exception(error_from_response(int(result["status"]), result))
            else:
                value = result.get("answer")
                fut.set_result(dict(value) if isinstance(value, Mapping) else {})
