"""A client's concurrent calls of one kind, sent together: workflow starts and result waits.

A client that starts many workflows at once (``asyncio.gather`` of many ``execute_workflow``
calls), or waits for many results, would otherwise hold an HTTP exchange, and a connection,
per workflow for as long as the workflow runs. Here a call made while no other call of its
kind is in flight goes alone (``POST /workflows``, ``GET .../result``), so a lone caller sees
no change. Calls made while others are in flight queue and leave on the next loop turn, up to
``max_batch`` items and ``max_bytes`` a call, through the kind's batch call (``POST
/workflow-starts``, ``POST /workflow-results``). Its answer brings each item's result on a
line of its own as soon as that item's is known, so a quick workflow never waits for a slow
neighbour.

An item whose result does not arrive (the answer was cut short, the call failed, or the
frontend does not have the batch call) is sent again alone; a batch refused as over the
namespace's limit (429) goes again together after the frontend's wait, within the client's
retry budget, and its calls raise the refusal after that. Both kinds may be sent twice: a
start carries its request id, which makes it happen at most once however often it is sent,
and a result wait only reads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from kadence.exceptions import ResourceExhaustedError, RPCError
from kadence_protocol.limits import MAX_REQUEST_BYTES

from ._http import EncodedBody, StreamingTransport, error_from_response
from ._retry import asked_wait

__all__ = ["Batcher"]

_log = logging.getLogger(__name__)

MAX_BATCH = 500
_ROOM = 64  # what wraps the items in one body: {"starts":[...]}
# How long a batch refused as over the namespace's limit (429) is sent again together, after
# each Retry-After, before its calls raise the refusal: the client's retry budget of starts.
THROTTLED_WITHIN_S = 30.0

Single = Callable[[dict[str, Any], float | None], Awaitable[dict[str, Any]]]


@dataclass(eq=False)
class _Item:
    body: EncodedBody
    timeout: float | None
    future: asyncio.Future[dict[str, Any]]


class Batcher:
    """Sends a client's concurrent calls of one kind together to ``path`` (items under
    ``key``); ``single`` sends one alone (with whatever retries its kind has)."""

    def __init__(self, transport: StreamingTransport, single: Single, path: str, key: str, *,
                 max_batch: int = MAX_BATCH, max_bytes: int = MAX_REQUEST_BYTES - _ROOM,
                 throttled_within: float = THROTTLED_WITHIN_S) -> None:
        self.transport = transport
        self._single = single
        self._path = path
        self._key = key
        self._max_batch = max_batch
        self._max_bytes = max_bytes
        self._throttled_within = throttled_within
        self._pending: list[_Item] = []
        self._active = 0  # calls of this kind in flight, alone or together
        self._flush_scheduled = False
        self._supported = True  # False once the frontend has said it lacks the batch call
        self._tasks: set[asyncio.Task[None]] = set()

    async def call(self, body: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        """The answer to ``body`` (what the single call takes), sent alone or with others."""
        self._active += 1
        try:
            if not self._supported or (self._active == 1 and not self._pending):
                return await self._single(body, timeout)
            loop = asyncio.get_running_loop()
            item = _Item(EncodedBody.of(body), timeout, loop.create_future())
            self._pending.append(item)
            if not self._flush_scheduled:
                # The next loop turn: the calls made meanwhile (a gather's) leave together.
                self._flush_scheduled = True
                loop.call_soon(self._flush)
            return await item.future
        finally:
            self._active -= 1

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, []
        batch: list[_Item] = []
        size = 0
        for item in pending:
            if item.future.done():
                continue  # its caller stopped waiting before it left
            length = len(item.body.encoded) + 1
            if batch and (len(batch) >= self._max_batch or size + length > self._max_bytes):
                self._spawn(self._send(batch))
                batch, size = [], 0
            batch.append(item)
            size += length
        if batch:
            self._spawn(self._send(batch))

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Item], throttled_since: float | None = None) -> None:
        encoded = b'{"' + self._key.encode() + b'":[' + b",".join(i.body.encoded for i in batch) + b"]}"
        body = EncodedBody.of({self._key: [i.body for i in batch]}, encoded)
        timeouts = [i.timeout for i in batch]
        timeout = None if None in timeouts else max(t for t in timeouts if t is not None)
        throttled: ResourceExhaustedError | None = None
        asked = 0.0  # the wait a failed call's Retry-After asks of the calls going alone
        item_asked: dict[int, float] = {}  # by index: the wait an item's own 503 line asks
        try:
            async for line in self.transport.stream("POST", self._path, body=body, timeout=timeout):
                index = line.get("index")
                if not isinstance(index, int) or not 0 <= index < len(batch):
                    _log.warning("a streamed answer names no item of the call %s: %.200r; the rest go alone",
                                 self._path, line)
                    break
                future = batch[index].future
                if future.done():
                    continue
                status = int(line.get("status") or 500)
                if status < 400:
                    future.set_result(line.get("answer") or {})
                elif status == 503:
                    # The frontend met an outage on this item (a read without a connection in
                    # time, say): it goes again alone below, with the lone call's retries,
                    # after the wait its line asks (retry_after_ms: the lone call's Retry-After).
                    item_asked[index] = asked_wait(error_from_response(status, line), self._throttled_within)
                    continue
                else:
                    future.set_exception(error_from_response(status, line))
        except ResourceExhaustedError as err:
            throttled = err
        except RPCError as err:
            asked = asked_wait(err, self._throttled_within)
            if err.status in (404, 405) and err.error_type != "NamespaceNotFound":
                self._supported = False  # an older frontend: every call goes alone from now on
            _log.debug("%d calls sent together to %s: %s; the rest go alone", len(batch), self._path, err)
        except Exception:  # noqa: BLE001 -- never lose a caller's call: whatever failed, the rest go alone
            _log.warning("%d calls sent together to %s failed; the rest go alone", len(batch), self._path,
                          exc_info=True)
        finally:
            left = [item for item in batch if not item.future.done()]
            if throttled is not None and left:
                # Over the namespace's limit: together again after the frontend's wait, rather
                # than as many calls alone, each refused in turn; within the retry budget.
                now = asyncio.get_running_loop().time()
                since = now if throttled_since is None else throttled_since
                if now + throttled.retry_after - since <= self._throttled_within:
                    self._spawn(self._again(left, throttled.retry_after, since))
                else:
                    for item in left:
                        item.future.set_exception(throttled)
            else:
                for index, item in enumerate(batch):
                    if not item.future.done():
                        self._spawn(self._alone(item, max(asked, item_asked.get(index, 0.0))))

    async def _again(self, batch: list[_Item], wait: float, throttled_since: float) -> None:
        await asyncio.sleep(wait)
        left = [item for item in batch if not item.future.done()]
        if left:
            await self._send(left, throttled_since)

    async def _alone(self, item: _Item, after: float = 0.0) -> None:
        """The item sent alone, ``after`` seconds from now (a busy frontend's Retry-After)."""
        if after > 0:
            await asyncio.sleep(after)
        try:
            answer = await self._single(item.body, item.timeout)
        except Exception as exc:  # noqa: BLE001 -- handed to the caller waiting on it
            if not item.future.done():
                item.future.set_exception(exc)
            return
        if not item.future.done():
            item.future.set_result(answer)
