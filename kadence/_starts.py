"""A client's concurrent workflow starts, sent together.

A client that starts many workflows at once (``asyncio.gather`` of many ``execute_workflow``
calls) would otherwise hold an HTTP exchange, and a connection, per workflow for as long as
the workflow runs. Here a start made while no other start of the client is in flight goes
alone (``POST /workflows``), so a lone caller sees no change. Starts made while others are in
flight queue and leave on the next loop turn, up to ``max_batch`` items and ``max_bytes`` a
call, through ``POST /workflow-starts``. Its answer brings each item's result on a line of its
own as soon as that item's is known, so a quick workflow never waits for a slow neighbour.

An item whose result does not arrive (the answer was cut short, the call failed, or the
frontend does not have it) is sent again alone with its own request id, which makes a start
happen at most once however often it is sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from kadence.exceptions import RPCError
from kadence_protocol.limits import MAX_REQUEST_BYTES

from ._http import EncodedBody, StreamingTransport, error_from_response

__all__ = ["StartBatcher"]

_log = logging.getLogger(__name__)

BATCH_PATH = "/workflow-starts"
MAX_BATCH = 500
_ROOM = 64  # what wraps the items in one body: {"starts":[...]}

Single = Callable[[dict[str, Any], float | None], Awaitable[dict[str, Any]]]


@dataclass(eq=False)
class _Start:
    body: EncodedBody
    timeout: float | None
    future: asyncio.Future[dict[str, Any]]


class StartBatcher:
    """Sends a client's concurrent starts together; ``single`` sends one alone (with retries)."""

    def __init__(self, transport: StreamingTransport, single: Single, *, max_batch: int = MAX_BATCH,
                 max_bytes: int = MAX_REQUEST_BYTES - _ROOM) -> None:
        self.transport = transport
        self._single = single
        self._max_batch = max_batch
        self._max_bytes = max_bytes
        self._pending: list[_Start] = []
        self._active = 0  # starts of this client in flight, alone or together
        self._flush_scheduled = False
        self._supported = True  # False once the frontend has said it lacks the batch call
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, body: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        """Start the workflow ``body`` describes (what POST /workflows takes); its answer."""
        self._active += 1
        try:
            if not self._supported or (self._active == 1 and not self._pending):
                return await self._single(body, timeout)
            loop = asyncio.get_running_loop()
            start = _Start(EncodedBody.of(body), timeout, loop.create_future())
            self._pending.append(start)
            if not self._flush_scheduled:
                # The next loop turn: the starts made meanwhile (a gather's) leave together.
                self._flush_scheduled = True
                loop.call_soon(self._flush)
            return await start.future
        finally:
            self._active -= 1

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, []
        batch: list[_Start] = []
        size = 0
        for start in pending:
            if start.future.done():
                continue  # its caller stopped waiting before it left
            item = len(start.body.encoded) + 1
            if batch and (len(batch) >= self._max_batch or size + item > self._max_bytes):
                self._spawn(self._send(batch))
                batch, size = [], 0
            batch.append(start)
            size += item
        if batch:
            self._spawn(self._send(batch))

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Start]) -> None:
        encoded = b'{"starts":[' + b",".join(s.body.encoded for s in batch) + b"]}"
        body = EncodedBody.of({"starts": [s.body for s in batch]}, encoded)
        timeouts = [s.timeout for s in batch]
        timeout = None if None in timeouts else max(t for t in timeouts if t is not None)
        try:
            async for line in self.transport.stream("POST", BATCH_PATH, body=body, timeout=timeout):
                index = line.get("index")
                if not isinstance(index, int) or not 0 <= index < len(batch):
                    _log.warning("a streamed start names no item of the call: %.200r; the rest go alone", line)
                    break
                future = batch[index].future
                if future.done():
                    continue
                status = int(line.get("status") or 500)
                if status < 400:
                    future.set_result(line.get("answer") or {})
                else:
                    future.set_exception(error_from_response(status, line))
        except RPCError as err:
            if err.status in (404, 405) and err.error_type != "NamespaceNotFound":
                self._supported = False  # an older frontend: every start goes alone from now on
            _log.debug("%d starts sent together: %s; the rest go alone", len(batch), err)
        except Exception:  # noqa: BLE001 -- never lose a caller's start: whatever failed, the rest go alone
            _log.warning("%d starts sent together failed; the rest go alone", len(batch), exc_info=True)
        finally:
            for start in batch:
                if not start.future.done():
                    self._spawn(self._alone(start))

    async def _alone(self, start: _Start) -> None:
        try:
            answer = await self._single(start.body, start.timeout)
        except Exception as exc:  # noqa: BLE001 -- handed to the caller waiting on it
            if not start.future.done():
                start.future.set_exception(exc)
            return
        if not start.future.done():
            start.future.set_result(answer)
