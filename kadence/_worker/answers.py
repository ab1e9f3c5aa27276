"""A worker's task answers: several to one HTTP call when they pile up, kept under the
frontend's request size, and sent again while the frontend is unreachable.

A worker under load finishes many tasks at about the same time. ``AnswerBatcher`` wraps
the transport: an answer goes out at once, from the task that gives it, when fewer than
``max_in_flight`` answer calls are under way, and otherwise waits for one of them to return
and leaves with everything queued meanwhile, through ``POST /task-answers``. Nothing waits
on a timer or on a turn of the event loop, so a lone answer is on the wire before the task
that gave it yields; each caller still gets its own answer or its own error.
With tracing on every answer goes alone, carrying its own trace context.

Held answers: the tasks of one poll's answer are started together, and a poller holds the
answers back (:meth:`AnswerBatcher.hold`) until each of those tasks has run to its first
wait. Otherwise the first ones would each go out alone, their HTTP calls made (and their
workflows' tasks committed by history one by one) before the rest of the answer's
workflows had even woken; held, every workflow of the answer wakes first and the answers
leave together.

Sizes: a batch holds at most ``max_batch`` answers and ``max_bytes`` of JSON (the frontend
refuses bodies over :data:`kadence.common.MAX_REQUEST_BYTES` with 413). A batch refused with
413 anyway is split in two and each half sent again (and the limit learnt); an answer that
alone is over the limit never vanishes: its task is failed instead, with a
``PayloadTooLarge`` failure saying how large it was (a failure too large is cut short).

Retries: an answer is sent again, unchanged, on connection trouble, 5xx or 429, with
backoff for up to ``retry.within`` seconds. That is safe because history takes the answer
to a task attempt once and ignores a repeat (or an answer to an attempt already over).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kadence._http import EncodedBody, Transport, dumps, error_from_response
from kadence._retry import Backoff, asked_wait, retrying
from kadence.exceptions import RPCError
from kadence_protocol import tracing as _tracing
from kadence_protocol.limits import MAX_REQUEST_BYTES

__all__ = ["ANSWER_PATHS", "ANSWER_RETRY", "AnswerBatcher"]

_log = logging.getLogger(__name__)

# path of the single-answer call -> its operation name in POST /task-answers
ANSWER_PATHS = {
    "/workflow-tasks/complete": "complete_workflow_task",
    "/workflow-tasks/fail": "fail_workflow_task",
    "/workflow-tasks/timer-ahead": "timer_ahead_workflow_task",
    "/activity-tasks/complete": "complete_activity_task",
    "/activity-tasks/fail": "fail_activity_task",
    "/activity-tasks/cancel": "cancel_activity_task",
}

# The start of an answer's item in a batch's body, by path: {"operation":"...","body":
_ITEM_HEADS = {path: b'{"operation":"%s","body":' % op.encode() for path, op in ANSWER_PATHS.items()}

#: An answer lost to a frontend restart is sent again for up to a minute.
ANSWER_RETRY = Backoff(attempts=0, within=60.0, first=0.1, factor=2.0, cap=5.0)

# Room for what wraps the answers' bodies in one request: {"answers":[...]} and, per answer,
# {"operation":"...","body":...}.
_REQUEST_ROOM = 64
_ANSWER_ROOM = 64
_MIN_BYTES = 16 * 1024  # a learnt limit never goes below this
# A failure too large to send is cut to these many characters of message and stack trace.
_FAILURE_MESSAGE_CHARS = 4096
_FAILURE_STACK_CHARS = 16 * 1024


@dataclass(slots=True)
class _Answer:
    path: str
    body: Mapping[str, Any]
    encoded: bytes  # the body's JSON, made once (see _encode)
    size: int  # bytes it adds to a POST /task-answers body
    future: asyncio.Future[dict[str, Any]]


def _encode(body: Mapping[str, Any]) -> bytes:
    """The body's JSON, made once: it gives the answer's size, is sent as it is alone, and is
    put as it is into a batch's body."""
    return body.encoded if isinstance(body, EncodedBody) else dumps(body if type(body) is dict else dict(body))


def _size(path: str, encoded: bytes) -> int:
    return len(encoded) + len(ANSWER_PATHS.get(path, "")) + _ANSWER_ROOM


def _batch_body(batch: list[_Answer]) -> EncodedBody:
    """The POST /task-answers body of ``batch``, its encoding put together from the answers'
    own (operation names are plain ASCII identifiers: nothing to escape)."""
    encoded = b'{"answers":[' + b",".join([_ITEM_HEADS[a.path] + a.encoded + b"}" for a in batch]) + b"]}"
    return EncodedBody.of({"answers": [{"operation": ANSWER_PATHS[a.path], "body": a.body} for a in batch]}, encoded)


def _retryable(err: RPCError) -> bool:
    return err.retryable and err.status != 413


class AnswerBatcher:
    """A Transport that sends task answers together; every other call passes straight through."""

    def __init__(self, transport: Transport, *, max_in_flight: int = 2, max_batch: int = 500,
                 max_bytes: int = MAX_REQUEST_BYTES - _REQUEST_ROOM, retry: Backoff = ANSWER_RETRY) -> None:
        self._transport = transport
        self._max_in_flight = max_in_flight
        self._max_batch = max_batch
        self._max_bytes = max_bytes
        self._retry = retry
        self._pending: list[_Answer] = []
        self._in_flight = 0
        self._held = 0  # holds under way (hold): answers queue, none leaves
        self._flushes: set[asyncio.Task[None]] = set()

    @property
    def max_bytes(self) -> int:
        """The most bytes of answers one request carries (lowered when the frontend says 413)."""
        return self._max_bytes

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        if method != "POST" or path not in ANSWER_PATHS or body is None:
            return await self._transport.call(method, path, body=body, params=params, timeout=timeout)
        encoded = _encode(body)
        size = _size(path, encoded)
        if size > self._max_bytes:
            return await self._too_large(path, body, size)
        if _tracing.tracer() is not None:
            return await self._send_one(path, body, encoded, size)
        if self._in_flight < self._max_in_flight and not self._pending and not self._held:
            # Sent right here: a task in a flush of its own would put it behind whatever
            # else the loop runs first (such as the poller's next poll).
            self._in_flight += 1
            try:
                return await self._send_one(path, body, encoded, size)
            finally:
                self._done()
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending.append(_Answer(path, body, encoded, size, fut))
        if self._in_flight < self._max_in_flight and not self._held:
            self._flush_soon()
        return await fut

    async def close(self) -> None:
        """Nothing to close: the wrapped transport belongs to the client."""

    def hold(self) -> None:
        """Answers given from now on queue until :meth:`release` (see the module docstring)."""
        self._held += 1

    def release(self) -> None:
        """End one :meth:`hold`; after the last, what queued meanwhile leaves together."""
        self._held -= 1
        if not self._held and self._pending and self._in_flight < self._max_in_flight:
            self._flush_soon()

    def _flush_soon(self) -> None:
        self._in_flight += 1
        task = asyncio.get_running_loop().create_task(self._flush())
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    def _take_batch(self) -> list[_Answer]:
        """The oldest queued answers that fit in one request, at least one."""
        total, count = 0, 0
        for answer in self._pending:
            if count and (count >= self._max_batch or total + answer.size > self._max_bytes):
                break
            total += answer.size
            count += 1
        batch, self._pending = self._pending[:count], self._pending[count:]
        return batch

    async def _flush(self) -> None:
        # Runs a loop turn after it was scheduled: answers queued meanwhile go along.
        try:
            await self._send(self._take_batch())
        finally:
            self._done()

    def _done(self) -> None:
        self._in_flight -= 1
        if self._pending and self._in_flight < self._max_in_flight and not self._held:
            self._flush_soon()

    async def _send(self, batch: list[_Answer]) -> None:
        """Send ``batch`` and settle each answer's future with its own result or error."""
        batch = [a for a in batch if not a.future.done()]
        if not batch:
            return
        if len(batch) == 1:
            answer = batch[0]
            try:
                result = await self._send_one(answer.path, answer.body, answer.encoded, answer.size)
            except Exception as err:  # noqa: BLE001 - the caller waiting on the future gets it
                _settle(answer.future, error=err)
            else:
                _settle(answer.future, result=result)
            return
        await self._send_many(batch)

    async def _send_one(self, path: str, body: Mapping[str, Any], encoded: bytes, size: int) -> dict[str, Any]:
        sent = EncodedBody.of(body, encoded)
        try:
            return await retrying(lambda: self._transport.call("POST", path, body=sent),
                                  backoff=self._retry, retry_if=_retryable, what=f"task answer {path}", logger=_log)
        except RPCError as err:
            if err.status != 413:
                raise
            self._learn(size)
            return await self._too_large(path, body, size)

    async def _send_many(self, batch: list[_Answer]) -> None:
        body = _batch_body(batch)
        try:
            reply = await retrying(lambda: self._transport.call("POST", "/task-answers", body=body),
                                   backoff=self._retry, retry_if=_retryable, what="task answers", logger=_log)
        except RPCError as err:
            if err.status == 413:
                # Over the frontend's limit after all: each half goes again, none is dropped.
                self._learn(sum(a.size for a in batch) + _REQUEST_ROOM)
                half = len(batch) // 2
                await asyncio.gather(self._send(batch[:half]), self._send(batch[half:]))
                return
            for answer in batch:
                _settle(answer.future, error=err)
            return
        except Exception as err:  # noqa: BLE001 - the call failed as a whole: every answer in it failed
            for answer in batch:
                _settle(answer.future, error=err)
            return
        results = reply.get("results")
        again: list[tuple[_Answer, float]] = []
        for i, answer in enumerate(batch):
            result = results[i] if isinstance(results, list) and i < len(results) else None
            if answer.future.done():
                continue
            if not isinstance(result, Mapping):
                _settle(answer.future, error=error_from_response(
                    502, {"error": "BadResponse", "message": f"no result for answer {i}"}))
            elif int(result.get("status", 500)) >= 400:
                error = error_from_response(int(result["status"]), result)
                if _retryable(error):
                    # Such as the broker refusing it: sent again on its own, after the wait its
                    # line asks (retry_after_ms, what the lone call's Retry-After would say).
                    again.append((answer, asked_wait(error)))
                else:
                    _settle(answer.future, error=error)
            else:
                value = result.get("answer")
                _settle(answer.future, result=dict(value) if isinstance(value, Mapping) else {})
        if again:
            await asyncio.gather(*(self._send_after(a, wait) for a, wait in again))

    async def _send_after(self, answer: _Answer, wait: float) -> None:
        if wait > 0:
            await asyncio.sleep(wait)
        await self._send([answer])

    def _learn(self, refused: int) -> None:
        """The frontend refused ``refused`` bytes: keep requests below that from now on."""
        limit = max(_MIN_BYTES, min(self._max_bytes, refused - 1))
        if limit < self._max_bytes:
            _log.warning("the frontend refused a %d-byte request (413); task answers now go in requests "
                         "of at most %d bytes", refused, limit)
            self._max_bytes = limit

    async def _direct(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Sent alone, outside the batches and their in-flight limit: the caller may hold a
        slot of that limit already."""
        encoded = _encode(body)
        size = _size(path, encoded)
        if size > self._max_bytes:
            return await self._too_large(path, body, size)
        return await self._send_one(path, body, encoded, size)

    async def _too_large(self, path: str, body: Mapping[str, Any], size: int) -> dict[str, Any]:
        """An answer over the limit: fail its task instead, saying why (see the module docstring)."""
        reason = (f"the answer to this task is {size} bytes, over the limit of {self._max_bytes} bytes "
                  f"for a request to the frontend")
        if path == "/workflow-tasks/timer-ahead":
            # Nothing to fail: history fires the timer after its grace and hands the task out.
            raise RPCError(413, "PayloadTooLarge", reason)
        if path == "/activity-tasks/complete" and "workflow_task" in body:
            # The workflow task run ahead is what makes it too large: leave that task to
            # history, as when history does not take one.
            return await self._direct(path, {k: v for k, v in body.items() if k != "workflow_task"})
        failure = {"message": reason, "type": "PayloadTooLarge", "stack_trace": "", "non_retryable": True,
                   "details": None}
        if path == "/activity-tasks/complete":
            _log.error("activity result too large (%s); failing the activity", reason)
            await self._direct("/activity-tasks/fail", {
                "task_token": body.get("task_token"), "failure": failure, "identity": body.get("identity", "")})
        elif path == "/workflow-tasks/complete":
            _log.error("workflow task answer too large (%s); failing the workflow task", reason)
            await self._direct("/workflow-tasks/fail", {
                "task_token": body.get("task_token"), "cause": "PayloadTooLarge", "failure": failure,
                "identity": body.get("identity", "")})
        else:
            # A failure too large: its type and the start of its message and stack go.
            original = dict(body.get("failure") or {})
            cut = {**original, "details": None,
                   "message": str(original.get("message", ""))[:_FAILURE_MESSAGE_CHARS],
                   "stack_trace": str(original.get("stack_trace", ""))[:_FAILURE_STACK_CHARS]}
            smaller = {**body, "failure": cut}
            if _size(path, _encode(smaller)) <= self._max_bytes:
                _log.warning("task failure too large (%s); sending it cut short", reason)
                return await self._direct(path, smaller)
        raise RPCError(413, "PayloadTooLarge", reason)


def _settle(future: asyncio.Future[dict[str, Any]], *, result: dict[str, Any] | None = None,
            error: BaseException | None = None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result or {})
