"""Run statuses read together: concurrent reads of one run's status each become one query.

A result wait reads its run's status column when it starts (a client whose long poll came
back Running polls again, and a close between the two polls must not be missed). Thousands
of workflows started together poll again together, and one query each made those reads a
large part of the server's work (the README's timer figures measure it). Reads that arrive
while a query is out wait for the next one, which takes them all (up to ``max_batch``), so
a lone read still costs one query and a crowd costs a few.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

# (namespace, workflow id, run id)
RunKey = tuple[str, str, str]
Fetch = Callable[[Sequence[RunKey]], Awaitable[dict[RunKey, str]]]

MAX_BATCH = 1_000


class StatusReads:
    def __init__(self, fetch: Fetch, *, max_batch: int = MAX_BATCH) -> None:
        """``fetch``: the statuses of the runs named, in one query (a run not found is left out)."""
        self._fetch = fetch
        self._max_batch = max_batch
        self._pending: list[tuple[RunKey, asyncio.Future[str | None]]] = []
        self._reader: asyncio.Task[None] | None = None

    async def status(self, namespace: str, workflow_id: str, run_id: str) -> str | None:
        """The run's status column, None if there is no such run."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[str | None] = loop.create_future()
        self._pending.append(((namespace, workflow_id, run_id), answer))
        if self._reader is None:
            self._reader = loop.create_task(self._read())
        return await answer

    async def _read(self) -> None:
        batch: list[tuple[RunKey, asyncio.Future[str | None]]] = []
        try:
            while self._pending:
                batch, self._pending = self._pending[:self._max_batch], self._pending[self._max_batch:]
                # Waits whose caller went away (a client that hung up) need no row.
                keys = list(dict.fromkeys(key for key, answer in batch if not answer.done()))
                if not keys:
                    continue
                try:
                    found = await self._fetch(keys)
                except Exception as exc:  # noqa: BLE001 - each caller meets the error as its own read would
                    for _, answer in batch:
                        if not answer.done():
                            answer.set_exception(exc)
                    continue
                for key, answer in batch:
                    if not answer.done():
                        answer.set_result(found.get(key))
                batch = []
        finally:
            # Cancelled (the process stops): nobody is left waiting for a read that never comes.
            for _, answer in (*batch, *self._pending):
                answer.cancel()
            self._pending = []
            self._reader = None
