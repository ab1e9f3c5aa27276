"""Wake-ups for result long-polls: PostgreSQL ``LISTEN kadence_closed``.

History runs ``pg_notify('kadence_closed', ...)`` in the transaction that closes a run,
with the run id and, when it fits, the run's outcome (services/common/outcome.py): a
waiter woken with it answers without reading the row. One dedicated connection listens;
if it is lost it is opened again and every waiter is woken so it re-reads its row (a
notification may have been missed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import asyncpg

from services.common import outage
from services.common.aio import cancel
from services.common.outcome import CHANNEL, parse_close_payload
from services.common.supervision import Fatal, watch

log = logging.getLogger(__name__)

# What a waiter is woken with: (closed, the outcome when the notification carried it).
# (False, None) means "look again".
Wake = tuple[bool, dict[str, Any] | None]


RECENT = 10_000  # closed runs remembered, so that a wait that begins after the close sees it


class CloseWatcher:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._waiters: dict[str, set[asyncio.Future[Wake]]] = {}
        self._recent: OrderedDict[str, dict[str, Any] | None] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()

    async def start(self, fatal: Fatal | None = None) -> None:
        """Start listening; if the listening task ever dies, ``fatal`` is declared."""
        self._task = asyncio.create_task(self._run(), name="frontend-close-watcher")
        if fatal is not None:
            watch(self._task, "the frontend's close watcher", fatal)

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None

    def watch(self, run_id: str) -> asyncio.Future[Wake]:
        """A future woken when ``run_id`` closes; already done if it closed lately."""
        fut: asyncio.Future[Wake] = asyncio.get_running_loop().create_future()
        if run_id in self._recent:
            fut.set_result((True, self._recent[run_id]))
            return fut
        self._waiters.setdefault(run_id, set()).add(fut)
        return fut

    def closed(self, runs: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Runs that history in this process has just closed, with their outcomes."""
        for run_id, answer in runs:
            self._closed(run_id, answer)

    def _closed(self, run_id: str, answer: dict[str, Any] | None) -> None:
        if answer is not None or run_id not in self._recent:
            self._recent[run_id] = answer
            while len(self._recent) > RECENT:
                self._recent.popitem(last=False)
        self._wake(run_id, (True, answer))

    def unwatch(self, run_id: str, fut: asyncio.Future[Wake]) -> None:
        waiters = self._waiters.get(run_id)
        if waiters is not None:
            waiters.discard(fut)
            if not waiters:
                del self._waiters[run_id]

    def _wake(self, run_id: str, wake: Wake) -> None:
        for fut in self._waiters.pop(run_id, set()):
            if not fut.done():
                fut.set_result(wake)

    def _wake_all(self) -> None:
        for run_id in list(self._waiters):
            self._wake(run_id, (False, None))

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        if payload.partition(" ")[0] in self._recent:
            return  # told already, by history in this process
        self._closed(*parse_close_payload(payload))

    async def _run(self) -> None:
        backoff = outage.Backoff(f"listening on {CHANNEL}", log, base=1.0)
        while True:
            lost = asyncio.Event()
            try:
                async with self._pool.acquire() as conn:
                    conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                    await conn.add_listener(CHANNEL, self._on_notify)
                    backoff.recovered()
                    self.listening.set()
                    self._wake_all()  # anything that closed while we were not listening
                    try:
                        while not lost.is_set():
                            with contextlib.suppress(TimeoutError):
                                await asyncio.wait_for(lost.wait(), 10.0)
                            if not lost.is_set():
                                await conn.execute("SELECT 1")  # notice a silently dead socket
                    finally:
                        self.listening.clear()
                        if not conn.is_closed():
                            await conn.remove_listener(CHANNEL, self._on_notify)
            except outage.DATABASE_ERRORS as exc:
                self._wake_all()
                await backoff.wait(exc)  # logged at the first failure, then now and then
                continue
            self._wake_all()
            await asyncio.sleep(1.0)
