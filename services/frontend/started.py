"""Started records held back: most tasks are answered before a start is worth recording.

A worker usually answers a task within milliseconds of being handed it, and history
takes an answer (or an activity heartbeat) that arrives without a started record as
the start. So the frontend holds each task's started record for ``delay`` seconds and
drops it when the task's answer or heartbeat passes through this frontend first: for a
quick task that saves a command on ``kadence.requests`` and a batch slot in history.
A task still running after the delay is recorded as started with the time it was
handed out, which its timeouts count from.

Nothing is lost with a record that is never sent: a task that history never saw start
is published again by its re-dispatch, and whichever worker answers first is taken as
its start. An answer given to another frontend leaves the record here to be sent late,
and history ignores a started record for a task already answered.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from services.common.aio import cancel

log = logging.getLogger(__name__)

TaskKey = tuple[str, int, int]  # run_id, scheduled_event_id, attempt
Send = Callable[[str, dict[str, Any], str | None], Awaitable[None]]  # name, record, traceparent


def task_key(record: dict[str, Any]) -> TaskKey:
    return record["run_id"], record["scheduled_event_id"], record["attempt"]


class StartedRecords:
    def __init__(self, send: Send, delay: float) -> None:
        self._send = send
        self._delay = max(0.0, delay)
        self._held: dict[TaskKey, tuple[str, dict[str, Any], str | None]] = {}
        self._due: deque[tuple[float, TaskKey]] = deque()  # in hold order, so in due order
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="started-records")

    async def stop(self) -> None:
        """Stop the timer and send what is still held (the tasks may outlive this frontend)."""
        await cancel(self._task)
        self._task = None
        held, self._held = self._held, {}
        self._due.clear()
        for name, record, traceparent in held.values():
            await self._send_logged(name, record, traceparent)

    def hold(self, name: str, record: dict[str, Any], traceparent: str | None) -> None:
        key = task_key(record)
        self._held[key] = (name, record, traceparent)
        self._due.append((asyncio.get_running_loop().time() + self._delay, key))
        if len(self._due) == 1:
            self._wake.set()

    def settled(self, key: TaskKey) -> None:
        """The task's answer or heartbeat goes to history: its start needs no record."""
        self._held.pop(key, None)

    def __len__(self) -> int:
        return len(self._held)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._due:
                self._wake.clear()
                await self._wake.wait()
                continue
            due, key = self._due[0]
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            self._due.popleft()
            held = self._held.pop(key, None)
            if held is not None:
                await self._send_logged(*held)

    async def _send_logged(self, name: str, record: dict[str, Any], traceparent: str | None) -> None:
        try:
            await self._send(name, record, traceparent)
        except Exception as exc:  # noqa: BLE001 - a lost started record only delays the task's recovery
            log.warning("could not send %s of %s (%r); the task's answer or re-dispatch settles it",
                        name, record.get("workflow_id"), exc)
