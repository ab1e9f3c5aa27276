"""Reads of runs made together: concurrent reads of one kind (a run's status, a run's row)
each become one query for many runs.

A result wait reads its run's status column when it starts (a client whose long poll came
back Running polls again, and a close between the two polls must not be missed), and reads
the run's row when it learns of a close without its outcome. Thousands of workflows started
together poll again together, and one query each made those reads a large part of the
server's work (the README's timer figures measure it), and queued thousands of reads for the
result reads' share of the pool (decision 0020). Reads that arrive while a query is out wait
for the next one, which takes them all (up to ``max_batch``), so a lone read still costs one
query and a crowd costs a few, on one connection at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

# (namespace, workflow id, run id)
RunKey = tuple[str, str, str]
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

MAX_BATCH = 1_000


class ReadsTogether(Generic[K, V]):
    def __init__(self, fetch: Callable[[Sequence[K]], Awaitable[dict[K, V]]], *, max_batch: int = MAX_BATCH) -> None:
        """``fetch``: the values of the keys named, in one query (a key not found is left out)."""
        self._fetch = fetch
        self._max_batch = max_batch
        self._pending: list[tuple[K, asyncio.Future[V | None]]] = []
        self._reader: asyncio.Task[None] | None = None

    async def read(self, key: K) -> V | None:
        """The value of ``key``, None if there is none. A failed query fails every read it
        served, each as its own read would have failed."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[V | None] = loop.create_future()
        self._pending.append((key, answer))
        if self._reader is None:
            self._reader = loop.create_task(self._read())
        return await answer

    async def _read(self) -> None:
        batch: list[tuple[K, asyncio.Future[V | None]]] = []
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


class StatusReads(ReadsTogether[RunKey, str]):
    """Status columns of runs, read together."""

    async def status(self, namespace: str, workflow_id: str, run_id: str) -> str | None:
        """The run's status column, None if there is no such run."""
        return await self.read((namespace, workflow_id, run_id))
