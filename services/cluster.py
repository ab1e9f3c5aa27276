"""frontend, history and matching together in one process (development and tests)."""

from __future__ import annotations

import dataclasses
from typing import Any

import asyncpg

from services.common import db, kafka
from services.common.config import Settings
from services.common.supervision import Fatal


class Cluster:
    """All three services against a given broker and DSN.

    Frontend and matching share one PostgreSQL pool; history has its own, so that a
    burst of reads (a thousand result waits checking their runs) cannot keep the shard
    loops waiting for a connection to commit.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pool: asyncpg.Pool | None = None
        self._started: list[object] = []
        # One for the three services: whatever dies in one brings the process down (kadence dev).
        self.fatal = Fatal()

    @property
    def url(self) -> str:
        return str(self.frontend.url)

    async def start(self) -> None:
        from services.frontend import FrontendService
        from services.history import HistoryService
        from services.matching import MatchingService
        from services.matching.client import MatchingClient

        s = self.settings = _in_process(self.settings)
        await db.migrate(s.database_url)
        created = await kafka.ensure_topics(s.kafka_bootstrap, s.shards, s.task_partitions, s.kafka_security)
        self.pool = await db.create_pool(s.database_url, max_size=12)
        self.matching = MatchingService(s, pool=self.pool)
        self.matching.fatal = self.fatal
        await self.matching.start()
        self._started.append(self.matching)
        self.history = HistoryService(s)
        self.history.fatal = self.fatal
        self.history.neighbours.takes_tasks = self.matching.takes
        self.history.neighbours.on_tasks = self.matching.hand_over
        # Topics that did not exist mean a broker that kept nothing (the development broker
        # after a restart): PostgreSQL, the system of record, carries the workflows on.
        await self.history.start(fresh_broker=kafka.REQUESTS in created)
        self._started.append(self.history)
        self.matching_client = MatchingClient(self.pool, s.task_partitions, local=self.matching,
                                              internal_key=s.internal_key)
        # Commands this frontend produces go straight to history's shards (see take_queued).
        self.frontend = FrontendService(s, pool=self.pool, matching=self.matching_client,
                                        on_queued=self.history.take_queued)
        self.frontend.fatal = self.fatal
        self.frontend.health_sources["history"] = self.history.health  # stalled shards answer 503
        await self.frontend.start()
        self._started.append(self.frontend)
        # Replies and closes go to this frontend straight from history's commits.
        n = self.history.neighbours
        n.on_replies, n.on_closed = self.frontend.take_replies, self.frontend.take_closed
        n.reply_to = frozenset({self.frontend.instance_id})
        # Visibility rows from kadence.history, in this process (services/visibility/consumer.py).
        from services.visibility.consumer import VisibilityConsumer

        self.visibility = VisibilityConsumer(s.kafka_bootstrap, self.pool, session_timeout_ms=s.session_timeout_ms,
                                             security=s.kafka_security, fatal=self.fatal)
        await self.visibility.start()
        self._started.append(self.visibility)

    async def stop(self) -> None:
        while self._started:
            service = self._started.pop()
            await service.stop()  # type: ignore[attr-defined]
        if getattr(self, "matching_client", None) is not None:
            await self.matching_client.close()
        if self.pool is not None:
            await self.pool.close()
            self.pool = None


# Fetch waits in one process: commands, tasks and replies produced here are handed over
# at once, so the fetches only carry what other processes produce (and the broker's
# copies to skip). Long waits save the development broker and every consumer hundreds of
# empty fetches a second.
IN_PROCESS_FETCH_WAITS_MS = {"history_fetch_wait_ms": 25, "matching_fetch_wait_ms": 100,
                             "replies_fetch_wait_ms": 100}


def _in_process(settings: Settings) -> Settings:
    """``settings`` with the longer fetch waits of one process, where not chosen otherwise."""
    defaults = Settings()
    longer: dict[str, Any] = {name: wait for name, wait in IN_PROCESS_FETCH_WAITS_MS.items()
                              if getattr(settings, name) == getattr(defaults, name)}
    return dataclasses.replace(settings, **longer)

