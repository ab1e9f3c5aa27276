"""The matching service: task queues of the owned ``kadence.tasks`` partitions.

Tasks arrive from Kafka (see ``consumer.py``); a task goes straight to the
longest-waiting poller of its queue (sync match) or into the PostgreSQL backlog.
Polls take queries first, then the backlog, then wait. Queries are handed to
workflow pollers and never persisted. The internal HTTP API (``http.py``) lets
frontends in other processes reach the owner of a partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from kadence_protocol import avro
from kadence_protocol.tracing import current_traceparent
from services.common import db, internal_auth, outage
from services.common.aio import cancel, log_death
from services.common.config import Settings
from services.common.kafka import partition_for, task_queue_key
from services.common.matching.errors import (
    NoPollerError,
    NotOwnerError,
    QueryFailedError,
    QueryTimeoutError,
    UnknownQueryError,
)
from services.common.matching.notices import NoticeOutcome, TaskNotice
from services.common.matching.query_scope import QueryScope
from services.common.matching.stats import QueueStats
from services.common.matching.tasks import KINDS, QUERY, TASK_KINDS, WORKFLOW, MatchedTask
from services.common.supervision import Fatal

from .backlog import BacklogRow, BacklogStore
from .consumer import TaskConsumer
from .queues import CommittedTask, QueueKey, RecentTasks, TaskQueue
from .stats import snapshot

log = logging.getLogger(__name__)


# Tasks handed over in process that wait in memory per queue; beyond, they wait in the backlog.
READY_MAX = 10_000
# Noticed tasks held per queue for the next polls until their records are fetched; beyond,
# a notice no poll waits for is left to the fetch alone.
NOTICED_MAX = 1_000
# How long the stop waits for the backlog stores under way before it cancels them.
BACKGROUND_STOP_S = 10.0

__all__ = ["MatchingService"]


@dataclass
class NoticeCounts:
    """Task notices received since start, by what became of them (tests and debugging)."""

    matched: int = 0
    stale: int = 0
    left: int = 0  # no poll waited: held for the next poll until the fetch brings the record
    taken_held: int = 0  # of those, taken by a poll that came before the fetch

    def add(self, outcome: NoticeOutcome) -> None:
        self.matched += outcome.matched
        self.stale += outcome.stale
        self.left += outcome.left


class MatchingService:
    def __init__(self, settings: Settings, *, pool: asyncpg.Pool | None = None) -> None:
        self.settings = settings
        self._pool = pool
        self._own_pool = pool is None
        self._store: BacklogStore | None = None
        self._owned: set[int] = set()
        self._queues: dict[QueueKey, TaskQueue] = {}
        self._recent = RecentTasks()
        # ids of the tasks waiting in the queues' ready lists
        self._ready_ids: set[str] = set()
        # ids of the noticed tasks held for polls (TaskQueue.noticed), with their queues
        self._noticed: dict[str, QueueKey] = {}
        # query_id -> the answer (result JSON, failure); query_id -> taken by a poller
        self._queries: dict[str, asyncio.Future[tuple[str | None, dict[str, Any] | None]]] = {}
        self._pickups: dict[str, asyncio.Future[None]] = {}
        # query_id -> where it was handed out (namespace, task queue): only a worker of those answers
        self._query_places: dict[str, tuple[str, str]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._releasing = False  # shutting down: polls are answered at once, empty
        self.notices = NoticeCounts()  # what became of history's task notices (notices.py)
        self._consumer: TaskConsumer | None = None
        self._http: Any = None
        self.fatal = Fatal()  # the runner waits on it (a Cluster shares one among its services)
        self.address = ""

    # -- life cycle ----------------------------------------------------------------

    async def start(self) -> None:
        from .http import InternalServer  # the server needs the service; import late

        s = self.settings
        internal_auth.check_bind("matching's internal API", s.matching_host, key=s.internal_key, insecure=s.insecure)
        if self._pool is None:
            self._pool = await db.create_pool(self.settings.database_url)
        self._store = BacklogStore(self._pool)
        self._http = InternalServer(self, key=s.internal_key)
        self.address = await self._http.start(self.settings.matching_host, self.settings.matching_port)
        self._consumer = TaskConsumer(self.settings, self)
        await self._consumer.start()
        log.info("matching %s serving at %s", self.settings.instance_id, self.address)

    async def stop(self) -> None:
        """Stop; also after a start that failed half-way. Each step runs whatever an earlier
        one raised (raised at the end): a consumer, server or pool left behind would go on."""

        async def release_all() -> None:  # read when it runs: what the consumer's stop left owned
            await self.revoke(list(self._owned))

        async def background_ended() -> None:
            # Every one, whatever another ended with (a store's error of any kind), before the
            # pool closes under them; one still writing after the bound is cancelled (a task
            # it did not store is dispatched again by history).
            tasks = list(self._background)
            if not tasks:
                return
            _, pending = await asyncio.wait(tasks, timeout=BACKGROUND_STOP_S)
            for task in tasks:
                if task in pending:
                    log.warning("a backlog store did not end within %g s of the stop", BACKGROUND_STOP_S)
                    await cancel(task)
                else:
                    log_death(task, "a backlog store")

        async with contextlib.AsyncExitStack() as then:  # run last pushed first
            then.callback(self._forget_parts)
            if self._own_pool and self._pool is not None:
                then.push_async_callback(self._pool.close)
            if self._http is not None:
                then.push_async_callback(self._http.stop)
            then.push_async_callback(background_ended)
            then.push_async_callback(release_all)
            if self._consumer is not None:
                await self._consumer.stop()

    def _forget_parts(self) -> None:
        """What the stop has stopped (a second stop finds nothing to stop)."""
        self._consumer = self._http = None
        if self._own_pool:
            self._pool = None

    @property
    def store(self) -> BacklogStore:
        if self._store is None:
            raise RuntimeError("MatchingService.start() has not run")
        return self._store

    def partition_of(self, namespace: str, task_queue: str) -> int:
        return partition_for(task_queue_key(namespace, task_queue), self.settings.task_partitions)

    def owns(self, partition: int) -> bool:
        return partition in self._owned

    @property
    def owned_partitions(self) -> frozenset[int]:
        return frozenset(self._owned)

    def queue_stats(self, namespace: str | None = None) -> list[QueueStats]:
        """Pollers and waiting tasks of the queues this instance holds (stats.py; read only)."""
        return snapshot(self._queues.values(), namespace)

    def describe_queue(self, namespace: str, task_queue: str) -> list[QueueStats]:
        """The stats of one task queue's kinds held here; NotOwnerError unless this instance
        owns its partition (only the owner sees its polls)."""
        partition = self.partition_of(namespace, task_queue)
        if partition not in self._owned:
            raise NotOwnerError(partition)
        return [s for s in snapshot(self._queues.values(), namespace) if s.task_queue == task_queue]

    # -- ownership (called by the consumer's rebalance listener) ----------------------

    async def assign(self, partitions: Iterable[int]) -> None:
        new = [p for p in partitions if p not in self._owned]
        if not new:
            return
        backoff = outage.Backoff(f"taking task partitions {new}", log)
        while True:
            # An assigned partition not owned would have its tasks skipped: wait out an outage.
            try:
                for p in new:
                    for key, n in (await self.store.counts(p)).items():
                        self._queue(key, p).backlog = n
                await self.store.claim(new, self.address, self.settings.instance_id)
                break
            except outage.DATABASE_TRANSIENT as exc:
                await backoff.wait(exc)
        backoff.recovered()
        self._owned.update(new)
        for q in self._queues.values():
            if q.partition in new and q.backlog:
                q.wake(q.backlog)
        log.info("matching %s owns task partitions %s", self.settings.instance_id, sorted(self._owned))

    async def revoke(self, partitions: Iterable[int]) -> None:
        gone = {p for p in partitions if p in self._owned}
        if not gone:
            return
        self._owned -= gone
        for key, q in list(self._queues.items()):
            if q.partition in gone:
                q.wake_all()  # their polls see the partition is gone and return empty
                # Tasks waiting in memory go with the partition: history re-dispatches them.
                self._ready_ids.difference_update(t.task_id for t in q.ready)
                for task_id in q.noticed:
                    self._noticed.pop(task_id, None)
                del self._queues[key]
        with contextlib.suppress(*outage.DATABASE_ERRORS):
            await self.store.release(sorted(gone), self.settings.instance_id)

    def _queue(self, key: QueueKey, partition: int) -> TaskQueue:
        q = self._queues.get(key)
        if q is None:
            q = self._queues[key] = TaskQueue(key, partition)
        return q

    # -- tasks from Kafka ---------------------------------------------------------------

    def holds(self, task_id: str) -> bool:
        """A task handed over by history here, waiting in memory for a poll: not lost, so
        history's re-dispatch need not publish it again (a delivered one may be: its
        poller can vanish before the started record)."""
        return task_id in self._ready_ids

    def is_duplicate(self, task_id: str) -> bool:
        """A copy of a task just delivered, or of one waiting in memory."""
        return task_id in self._recent or task_id in self._ready_ids

    async def noticed(self, partition: int, notices: list[TaskNotice]) -> NoticeOutcome:
        """History published these tasks to ``partition`` (services/common/matching/notices.py):
        hand those a poll waits for to it now, ahead of the fetch (TaskConsumer.noticed)."""
        consumer = self._consumer
        outcome = NoticeOutcome(left=len(notices)) if consumer is None else await consumer.noticed(partition, notices)
        self.notices.add(outcome)
        return outcome

    def hold_noticed(self, partition: int, key: QueueKey, tasks: Sequence[MatchedTask]) -> int:
        """Keep noticed tasks no poll waited for (TaskConsumer.noticed), for the polls that come
        before the fetch brings their records; return how many are kept.

        Taken once: a poll that takes one makes it a task handed out lately, so its fetched
        copy is dropped as a duplicate; a record fetched while its task is still held takes
        it back (:meth:`unnotice`) and goes the usual way (sync match, backlog). Nothing is
        stored: a held task is only ever a copy of a record the consumer has yet to ingest.
        """
        if partition not in self._owned:
            return 0
        q = self._queue(key, partition)
        kept = 0
        for task in tasks:
            if len(q.noticed) >= NOTICED_MAX:
                break
            if task.task_id in self._noticed or self.is_duplicate(task.task_id):
                continue
            q.noticed[task.task_id] = task.without_updates()  # a later poll reads the update requests of then
            self._noticed[task.task_id] = key
            kept += 1
        return kept

    def unnotice(self, task_id: str) -> None:
        """The consumer has the record of ``task_id``: a held notice of it gives way to it."""
        key = self._noticed.pop(task_id, None)
        if key is not None and (q := self._queues.get(key)) is not None:
            q.noticed.pop(task_id, None)

    def takes(self, namespace: str, task_queue: str) -> bool:
        """Whether tasks of this queue committed by history in this process may be handed
        over (:meth:`hand_over`) instead of published: this instance owns the queue's
        partition. With tracing on too: the task sink gives each its dispatch span
        (services/common/colocation.py TracedTasks)."""
        return self.partition_of(namespace, task_queue) in self._owned

    def hand_over(self, tasks: Sequence[CommittedTask]) -> None:
        """Take the tasks that history in this process has just committed (and not published).

        Waiting polls get them at once, each as many as it asked for; the rest wait in
        memory for the next polls. Held in memory only: if this process dies before a
        worker starts a task, or the partition moves elsewhere first, history's
        re-dispatch publishes it again. History passes each task as a record, and a
        workflow task's events decoded: nothing is encoded or decoded here.
        """
        by_queue: dict[QueueKey, tuple[int, list[MatchedTask]]] = {}
        for committed in tasks:
            kind, record = TASK_KINDS[committed.name], committed.record
            key = QueueKey(record["namespace"], record["task_queue"], kind)
            task_id = record["task_id"]
            if task_id in self._recent or task_id in self._ready_ids:
                continue
            entry = by_queue.get(key)
            if entry is None:
                partition = self.partition_of(key.namespace, key.task_queue)
                if partition not in self._owned:
                    log.warning("task %s came for partition %d, which moved elsewhere; history re-dispatches it",
                                task_id, partition)
                    continue
                entry = by_queue[key] = (partition, [])
            entry[1].append(MatchedTask(kind, task_id, record, traceparent=committed.traceparent,
                                        events=committed.events, updates=committed.updates))
        for key, (partition, queued) in by_queue.items():
            q = self._queue(key, partition)
            given = self._deliver(q, queued)
            # The update requests as of the commit are those of the run now, for the polls
            # just given their tasks; a task that waits is answered with the requests of then.
            kept = [t.without_updates() for t in queued[given:given + max(0, READY_MAX - len(q.ready))]]
            q.ready.extend(kept)
            self._ready_ids.update(t.task_id for t in kept)
            overflow = queued[given + len(kept):]
            if overflow:
                # Nobody polls this queue fast enough: the rest waits in the backlog, not in memory.
                rows = [BacklogRow(t.task_id, partition, key, t.encode()) for t in overflow]
                self._in_background(self._store_overflow(rows))

    async def _store_overflow(self, rows: list[BacklogRow]) -> None:
        try:
            await self.store_backlog(rows)
        except outage.DATABASE_ERRORS:
            log.exception("could not store %d tasks in the backlog; history re-dispatches them", len(rows))

    def _in_background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _deliver(self, q: TaskQueue, tasks: Sequence[MatchedTask]) -> int:
        """Give waiting polls a prefix of ``tasks``; return its length."""
        given = q.offer_many(tasks)
        for t in tasks[:given]:
            self._recent.add(t.task_id)
        return given

    def sync_match(self, partition: int, key: QueueKey, tasks: Sequence[MatchedTask]) -> int:
        """Hand a prefix of ``tasks`` (one queue's, in order) to waiting polls; return its length."""
        if partition not in self._owned:
            return 0
        q = self._queues.get(key)
        return 0 if q is None else self._deliver(q, tasks)

    def try_sync_match(self, partition: int, task: MatchedTask, key: QueueKey) -> bool:
        return self.sync_match(partition, key, [task]) == 1

    async def store_backlog(self, rows: list[BacklogRow]) -> None:
        stored = await self.store.add(rows)
        by_key: dict[QueueKey, int] = {}
        for key in stored:
            by_key[key] = by_key.get(key, 0) + 1
        for row in rows:
            if row.key in by_key and row.partition in self._owned:
                q = self._queue(row.key, row.partition)
                q.backlog += by_key.pop(row.key)
                q.wake(q.backlog)

    # -- polls -------------------------------------------------------------------------------

    async def poll(
        self, namespace: str, task_queue: str, kind: str, max_tasks: int = 1,
        wait_seconds: float = 60.0, identity: str = "", released: Callable[[], bool] | None = None,
    ) -> list[MatchedTask]:
        """``released``: whether the caller (a frontend in this process) is shutting down;
        its waiting polls then answer empty when woken (wake_polls), the others wait on."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        key = QueueKey(namespace, task_queue, kind)
        partition = self.partition_of(namespace, task_queue)
        if partition not in self._owned:
            raise NotOwnerError(partition)
        max_tasks = max(1, max_tasks)
        self._queue(key, partition).seen.saw(identity)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, wait_seconds)
        while True:
            if partition not in self._owned or self._releasing or (released is not None and released()):
                return []
            q = self._queue(key, partition)
            tasks = q.take_queries(max_tasks) if kind == WORKFLOW else []
            for t in tasks:
                self._mark_query_taken(t)
            if len(tasks) < max_tasks and q.backlog > 0:
                tasks += await self._take_backlog(q, max_tasks - len(tasks))
            if len(tasks) < max_tasks and q.ready:
                ready = q.take_ready(max_tasks - len(tasks))
                for t in ready:
                    self._ready_ids.discard(t.task_id)
                    self._recent.add(t.task_id)
                tasks += ready
            if len(tasks) < max_tasks and q.noticed:
                # Published and noticed, not fetched yet: taken here, its fetched copy is dropped.
                held = q.take_noticed(max_tasks - len(tasks))
                for t in held:
                    del self._noticed[t.task_id]
                    self._recent.add(t.task_id)
                self.notices.taken_held += len(held)
                tasks += held
            if tasks:
                return tasks
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            poller = q.add_poller(max_tasks)
            try:
                # Awaited directly, so a hand-over wakes the poll in one loop turn (asyncio.wait
                # takes two); the timeout cancels the poller's future, unless tasks beat it.
                async with asyncio.timeout(remaining):
                    await poller.future
            except TimeoutError:
                if not poller.future.done() or poller.future.cancelled():
                    q.remove_poller(poller)
                    return []
            except asyncio.CancelledError:
                if poller.future.done() and not poller.future.cancelled():
                    self.put_back(poller.future.result())
                else:
                    poller.future.cancel()
                    q.remove_poller(poller)
                raise
            got = poller.future.result()
            if got:
                for t in got:
                    if t.kind == QUERY:
                        self._mark_query_taken(t)
                return got
            # [] means: the backlog has new rows or the partition went away; look again.

    def release_polls(self) -> None:
        """Answer every waiting poll now, with no task, and every later one at once: this
        process is shutting down, and a poll must not hold the shutdown for its whole wait."""
        self._releasing = True
        self.wake_polls()

    def wake_polls(self) -> None:
        """Wake every waiting poll: each looks again, and those released answer empty."""
        for q in self._queues.values():
            q.wake_all()

    async def _take_backlog(self, q: TaskQueue, limit: int) -> list[MatchedTask]:
        rows = await self.store.take(q.key, limit)
        if not rows and q.backlog > 0:
            q.backlog = await self.store.count(q.key)  # the in-memory count drifted; resync
            return []
        q.backlog = max(0, q.backlog - len(rows))
        out: list[MatchedTask] = []
        for task_id, payload, traceparent in rows:
            if task_id in self._recent:
                # A copy of this task reached a waiting poller by sync match while this one
                # was being stored: it has been delivered already.
                continue
            try:
                _, record = avro.decode(payload)
            except avro.DecodeError:
                log.exception("dropping undecodable backlog row %s", task_id)
                continue
            self._recent.add(task_id)
            out.append(MatchedTask(q.key.kind, task_id, record, payload, traceparent))
        return out

    def put_back(self, tasks: list[MatchedTask]) -> None:
        """Return tasks whose poll went away before it answered (they go first)."""
        for task in reversed(tasks):
            task = task.without_updates()
            ns, tq = task.task["namespace"], task.task["task_queue"]
            kind = WORKFLOW if task.kind == QUERY else task.kind
            key = QueueKey(ns, tq, kind)
            partition = self.partition_of(ns, tq)
            q = self._queues.get(key)
            if task.kind == QUERY:
                fut = self._queries.get(task.task_id)
                if q is not None and fut is not None and not fut.done() and not q.offer(task):
                    q.queries.appendleft(task)
                continue
            if q is not None and q.offer(task):
                continue
            payload = task.encoded()
            if payload is None:
                log.warning("task %s lost its poller and has no payload to store", task.task_id)
                continue
            self._recent.discard(task.task_id)
            self._in_background(self._store_front(BacklogRow(task.task_id, partition, key, payload,
                                                               task.traceparent)))

    async def _store_front(self, row: BacklogRow) -> None:
        try:
            if await self.store.add_front(row) and row.partition in self._owned:
                q = self._queue(row.key, row.partition)
                q.backlog += 1
                q.wake(1)
        except outage.DATABASE_ERRORS:
            log.exception("could not put task %s back into the backlog", row.task_id)

    # -- queries -----------------------------------------------------------------------------

    def _mark_query_taken(self, task: MatchedTask) -> None:
        waiter = self._pickups.pop(task.task_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def query(
        self, namespace: str, task_queue: str, workflow_id: str, run_id: str, query_type: str,
        args_json: str | None, timeout: float, *, workflow_type: str = "",
    ) -> str | None:
        partition = self.partition_of(namespace, task_queue)
        if partition not in self._owned:
            raise NotOwnerError(partition)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        query_id = f"{partition}:{uuid.uuid4().hex}"
        task = MatchedTask(QUERY, query_id, {
            "query_id": query_id, "query_type": query_type,
            "args": json.loads(args_json) if args_json else [],
            "namespace": namespace, "task_queue": task_queue, "workflow_id": workflow_id,
            "run_id": run_id, "workflow_type": workflow_type,
        }, traceparent=current_traceparent())  # the worker answers inside the query's own trace
        answer: asyncio.Future[tuple[str | None, dict[str, Any] | None]] = loop.create_future()
        pickup: asyncio.Future[None] = loop.create_future()
        self._queries[query_id] = answer
        self._pickups[query_id] = pickup
        self._query_places[query_id] = (namespace, task_queue)
        q = self._queue(QueueKey(namespace, task_queue, WORKFLOW), partition)
        try:
            if q.offer(task):
                self._mark_query_taken(task)
            else:
                q.queries.append(task)
            try:
                await asyncio.wait_for(asyncio.shield(pickup), max(0.0, deadline - loop.time()))
            except TimeoutError:
                if task in q.queries:
                    q.queries.remove(task)
                raise NoPollerError(task_queue, timeout) from None
            try:
                result, failure = await asyncio.wait_for(answer, max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise QueryTimeoutError(
                    f"the worker took query {query_type!r} but did not answer within {timeout:g} s"
                ) from None
            if failure is not None:
                raise QueryFailedError(failure)
            return result
        finally:
            self._queries.pop(query_id, None)
            self._pickups.pop(query_id, None)
            self._query_places.pop(query_id, None)

    def respond_query(
        self, query_id: str, result_json: str | None = None, failure: dict[str, Any] | None = None,
        *, scope: QueryScope | None = None,
    ) -> None:
        """Deliver a worker's answer. With ``scope``, a query handed out elsewhere (another
        namespace, a task queue the sender may not poll) is unknown, as an id never issued."""
        fut = self._queries.get(query_id)
        place = self._query_places.get(query_id)
        if fut is None or fut.done() or (scope is not None and (place is None or not scope.admits(*place))):
            raise UnknownQueryError(query_id)
        fut.set_result((result_json, failure))


