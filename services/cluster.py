"""frontend, history and matching together in one process (development and tests)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

import asyncpg

from services.common import colocation, db, kafka
from services.common.aio import start_or_undo
from services.common.config import Settings
from services.common.fetch_waits import Consumer, fetch_wait_ms
from services.common.supervision import Fatal
from services.common.validation import Limits

log = logging.getLogger(__name__)
# How long `kadence dev`'s stop waits for visibility to project what history published last.
VISIBILITY_DRAIN_S = 5.0
# The pool frontend, matching and visibility share, unless KADENCE_FRONTEND_POOL_SIZE says.
CLUSTER_POOL_SIZE = 12


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
        """Start every service; if one fails to start, those started already are stopped
        (their consumers would otherwise go on in the caller's event loop) and the error raised."""
        await start_or_undo(self._start, self.stop)

    async def _start(self) -> None:
        from services.common.matching.client import MatchingClient
        from services.frontend import FrontendService
        from services.history import HistoryService
        from services.matching import MatchingService

        s = self.settings = _in_process(self.settings)
        await db.migrate(s.database_url)
        created = await kafka.ensure_topics(s.kafka_bootstrap, s.shards, s.task_partitions, s.kafka_security)
        self.pool = await db.create_pool(s.database_url, max_size=s.frontend_pool_size or CLUSTER_POOL_SIZE)
        self.matching = MatchingService(s, pool=self.pool)
        self.matching.fatal = self.fatal
        # Each service is stopped by stop() from the moment its start begins: a start cut
        # short leaves part of it running (history's stops itself, its start waiting longest).
        self._started.append(self.matching)
        await self.matching.start()
        self.matching_client = MatchingClient(self.pool, s.task_partitions, local=self.matching,
                                              internal_key=s.internal_key)
        # The co-location ports, chosen here once (services/common/colocation.py): commands go
        # from the frontend to history's shards, tasks from history to matching, replies from
        # history to the frontend, in process; or, with KADENCE_COLOCATE=0, all through the broker.
        commands: colocation.CommandBus = colocation.KafkaCommands()
        tasks: colocation.TaskSink = colocation.OutboxTasks()
        replies: colocation.ReplySink = colocation.OutboxReplies()
        self.frontend = FrontendService(s, pool=self.pool, matching=self.matching_client,
                                        commands=colocation.traced_commands(
                                            colocation.ColocatedCommands(self._to_history)
                                            if s.colocate else commands))
        if s.colocate:
            tasks = colocation.traced_tasks(colocation.LocalMatching(self.matching))
            replies = colocation.LocalFrontend(self.frontend)
        # Visibility rows from kadence.history, in this process (services/visibility/consumer.py);
        # co-located, the relays hand it what they published instead of it fetching that back.
        from services.visibility.consumer import VisibilityConsumer
        from services.visibility.handover import Handover

        handover = Handover() if s.colocate else None
        self.visibility = VisibilityConsumer(s.kafka_bootstrap, self.pool, session_timeout_ms=s.session_timeout_ms,
                                             security=s.kafka_security, fatal=self.fatal, handover=handover)
        self.history = HistoryService(s, tasks=tasks, replies=replies, published=handover)
        self.history.fatal = self.fatal
        # Before history: the broker answers a new consumer group's join after about a second,
        # and history's start waits for its own; visibility's join then runs meanwhile instead of
        # after, so runs are listed, and a stop is not held by a join, from when start returns.
        self._started.append(self.visibility)
        await self.visibility.start()
        # Topics that did not exist mean a broker that kept nothing (the development broker
        # after a restart): PostgreSQL, the system of record, carries the workflows on.
        await self.history.start(fresh_broker=kafka.REQUESTS in created)
        self._started.append(self.history)
        self.frontend.fatal = self.fatal
        self.frontend.health_sources["history"] = self.history.health  # stalled shards answer 503
        self._started.append(self.frontend)
        await self.frontend.start()

    def _to_history(self, partition: int, key: bytes, value: bytes, headers: colocation.Headers,
                    acked: asyncio.Future[Any], checked: Limits | None = None) -> None:
        """The co-located command bus: the frontend (built first) hands commands to history."""
        self.history.take_queued(partition, key, value, headers, acked, checked)

    async def __aenter__(self) -> Cluster:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self, *, drain_visibility_s: float = 0.0) -> None:
        """Stop every service. With ``drain_visibility_s`` (``kadence dev``), visibility
        stops last: once history has published its last records, it projects them (waiting
        at most that long), since the development broker forgets them at a restart."""
        visibility = getattr(self, "visibility", None) if drain_visibility_s > 0 else None
        if visibility is not None and visibility in self._started:
            self._started.remove(visibility)
        else:
            visibility = None
        # Each service is stopped whatever the stop of another raised (the first error is
        # raised at the end): one that failed must not leave the others running.
        failed: BaseException | None = None
        while self._started:
            service = self._started.pop()
            try:
                await service.stop()  # type: ignore[attr-defined]
            except BaseException as exc:  # raised below, once the rest is stopped
                if not isinstance(exc, asyncio.CancelledError):
                    log.exception("stopping %s failed", type(service).__name__)
                failed = failed or exc
        try:
            if visibility is not None:
                if not await visibility.drain(drain_visibility_s):
                    log.warning("stopping before visibility caught up: runs that closed in the last moments may"
                                " show as running, or not at all, in workflow lists")
                await visibility.stop()
        finally:
            if getattr(self, "matching_client", None) is not None:
                await self.matching_client.close()
            if self.pool is not None:
                await self.pool.close()
                self.pool = None
        if failed is not None:
            raise failed


# Fetch waits in one process: commands, tasks and replies produced here are handed over
# at once, so the fetches only carry what other processes produce (and the broker's
# copies to skip). Long waits save the development broker and every consumer hundreds of
# empty fetches a second.
def _in_process(settings: Settings) -> Settings:
    """``settings`` with the longer fetch waits of one process, where not chosen otherwise."""
    if not settings.colocate:
        return settings  # every hop through the broker: the waits of separate processes
    longer: dict[str, Any] = {c.value: fetch_wait_ms(settings, c, noticed=True) for c in Consumer}
    return dataclasses.replace(settings, **longer)

