"""The history service: owns the shards Kafka assigns it, one Shard per partition.

A group assignment is not a lock: each shard acquisition bumps range_id in
PostgreSQL, and every commit checks it (see store.py).

Outages of PostgreSQL or the broker are waited out by each loop (outage.py). A shard
whose loop dies of anything else is restarted here (released, then acquired again from
its stored offset), at most MAX_SHARD_RESTARTS times in SHARD_RESTART_WINDOW_S; past
that, or when the consumer task dies, the service declares itself fatal and its runner
exits non-zero (supervision.py).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord

from kadence_protocol.kafka_security import client_options
from kadence_protocol.kafka_stop import stop_consumer
from services.common import db, internal_auth, kafka, outage, unreadable
from services.common.aio import cancel, start_or_undo
from services.common.bind import UnsafeBind
from services.common.colocation import Headers, OutboxReplies, OutboxTasks, ReplySink, TaskSink, commands_grouped
from services.common.command_notices import CommandNotice, NoticeOutcome, owner_name
from services.common.config import Settings
from services.common.fetch_waits import Consumer, fetch_wait_ms
from services.common.health import HealthReport
from services.common.ingress_auth import IngressPolicy
from services.common.matching.client import MatchingClient
from services.common.namespaces import NamespaceRegistry
from services.common.reply_notices import BothNotices, Notices, ReplyNotices
from services.common.supervision import Fatal, watch
from services.common.validation import Limits

from . import log_end
from .gate import FetchGate
from .health import report
from .http import HealthServer
from .limits import limits_of
from .neighbours import HandedCommand
from .notices import NO_NOTICES, BothCommitNotices, CommitNotices, MatchingNotices, OwnCommands
from .periodic import run_every
from .resume import Resume, resume_from
from .retention import RetentionJob
from .scheduler import Scheduler
from .shard import Shard, ShardConfig
from .store import HistoryStore
from .telemetry import ObserverFactory, observer_factory
from .trim import RequestTrimmer

log = logging.getLogger(__name__)

GROUP = "kadence-history"
# The group's first join answers in about a second; one that does not is said at this interval
# (aiokafka retries a join quietly, and the start waits for it without end).
JOIN_REPORT_S = 10.0
MAX_SHARD_RESTARTS = 3
SHARD_RESTART_WINDOW_S = 300.0


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, service: HistoryService) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._fatal_on_error("releasing", self.service._release, [tp.partition for tp in revoked])

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self._fatal_on_error("acquiring", self.service._acquire, [tp.partition for tp in assigned])

    async def _fatal_on_error(self, what: str, step: Callable[[list[int]], Awaitable[None]],
                              partitions: list[int]) -> None:
        # aiokafka logs a listener's error and carries on, leaving partitions assigned with
        # no shard (outages are retried inside): anything else takes the process down.
        try:
            await step(partitions)
        except Exception as exc:
            if self.service._stopping:
                log.info("%s history shards %s while stopping: %r", what, partitions, exc)
                return
            log.critical("%s history shards %s failed", what, partitions, exc_info=True)
            self.service.fatal.declare(f"{what} history shards {partitions} failed: {exc!r}")


@dataclass
class NoticeCounts:
    """Command notices this instance was sent (services/common/command_notices.py)."""

    received: int = 0
    not_owned: int = 0  # for a partition without a running shard here
    own: int = 0  # commands this process's relay published, offered to its shards here (OwnCommands)


async def _said_while_waiting(step: Awaitable[None], every_s: float, what: str) -> None:
    """Await ``step``, warning ``what`` (with the time waited) each ``every_s`` it takes."""
    task = asyncio.ensure_future(step)
    waited = 0.0
    try:
        while not (await asyncio.wait([task], timeout=every_s))[0]:
            waited += every_s
            log.warning("%s (%g s)", what, waited)
    finally:
        if not task.done():  # this wait was cancelled: so is the step
            task.cancel()
            await asyncio.wait([task])
    task.result()


class HistoryService:
    """``tasks`` and ``replies``: where committed tasks and replies go (the co-location ports,
    services/common/colocation.py): through the outbox unless services in this process take them."""

    def __init__(self, settings: Settings, *, pool: asyncpg.Pool | None = None, tasks: TaskSink | None = None,
                 replies: ReplySink | None = None, published: Notices | None = None) -> None:
        self.settings = settings
        self._published = published  # also told what the relays published (visibility in this process)
        self.history_limits = limits_of(settings)  # a bad KADENCE_HISTORY_* fails here, at once
        self._own_pool = pool is None
        self.pool = pool
        self.shards: dict[int, Shard] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._ingress: IngressPolicy | None = None
        self._task: asyncio.Task[None] | None = None
        # Started by the first command a frontend in this process hands over (see gate.py).
        self._gate: FetchGate | None = None
        self._gate_task: asyncio.Task[None] | None = None
        self._fresh: set[int] = set()
        self._observer: ObserverFactory | None = None
        self._stopping = False
        self._jobs: list[asyncio.Task[Any]] = []
        self.trimmer: RequestTrimmer | None = None
        self.tasks: TaskSink = tasks or OutboxTasks()
        self.replies: ReplySink = replies or OutboxReplies()
        self.notices: CommitNotices = NO_NOTICES  # set by start() when tasks go through the outbox
        self.reply_notices: ReplyNotices | None = None  # set by start() when replies go through the outbox
        self._relayed: Notices = NO_NOTICES  # what the relay tells of what it published
        self._at_commit: CommitNotices = NO_NOTICES  # what a shard tells right after each commit
        self.fatal = Fatal()  # the runner waits on it (a Cluster shares one among its services)
        self._restarts: set[int] = set()  # shards whose loop died, restarted by the consumer task
        self._restarted: collections.deque[float] = collections.deque()  # when, for the bound
        self._consume_backoff = outage.Backoff("history consumer", log)
        self.health_server: HealthServer | None = None  # with settings.history_health_port, or notices
        # What shards.owner names: the instance, and the internal address taking command notices.
        self.owner = settings.instance_id
        self.command_notices = NoticeCounts()
        # Of kadence.requests; start() lengthens it when command notices carry the hop.
        self.fetch_wait_ms = fetch_wait_ms(settings, Consumer.HISTORY, noticed=False)

    async def start(self, *, fresh_broker: bool = False) -> None:
        """Start consuming. ``fresh_broker``: the topics were just created, so stored
        offsets belong to a broker that is gone and consumption restarts at 0."""
        # Only the first acquisition of each partition may restart it at 0: a later one
        # (a rebalance) must resume from the stored offset or commands would run twice.
        self._fresh = set(range(self.settings.shards)) if fresh_broker else set()
        if self.pool is None:
            self.pool = await db.create_pool(self.settings.database_url, max_size=max(4, self.settings.shards + 2))
        try:
            await db.fix_cluster_setting(self.pool, "shards", str(self.settings.shards), hint=(
                " (history shards = kadence.requests partitions, fixed when the cluster was created:"
                " set KADENCE_SHARDS to the recorded count)"))
        except db.ClusterMismatch:
            if self._own_pool:
                await self.pool.close()
                self.pool = None
            raise
        self.store = HistoryStore(self.pool)
        # Shared by the shards: records naming made-up namespaces cost one read per batch at most.
        self.namespaces = NamespaceRegistry(self.pool)
        if isinstance(self.tasks, OutboxTasks) and self.settings.task_notices:
            # Matching runs elsewhere: tell it of committed tasks ahead of its fetch (notices.py).
            self.notices = MatchingNotices(MatchingClient(self.pool, self.settings.task_partitions,
                                                          internal_key=self.settings.internal_key))
        if isinstance(self.replies, OutboxReplies) and self.settings.reply_notices:
            # Frontends run elsewhere: tell each of its replies ahead of its fetch (reply_notices.py).
            self.reply_notices = ReplyNotices(self.settings.internal_key)
        # Told at the commit: tasks to matching, replies to frontends elsewhere.
        self._at_commit = (self.notices if self.reply_notices is None else self.reply_notices
                           if self.notices is NO_NOTICES else BothCommitNotices(self.notices, self.reply_notices))
        keys = self.settings.ingress_keys
        self._ingress = IngressPolicy.from_file(Path(keys)) if keys else None  # signed ingress, if required
        # Cancelled or failed half-way (the group join waits on the broker): what started stops.
        await start_or_undo(self._start, self.stop)

    async def _start(self) -> None:
        await self._serve()
        if self.health_server is not None and self.health_server.takes_notices:
            # Commands of this process's relay to shards here need not wait for the fetch either.
            own = OwnCommands(self.offer_own)
            self._relayed = own if self._relayed is NO_NOTICES else BothNotices(self._relayed, own)
        if self._published is not None:
            self._relayed = (self._published if self._relayed is NO_NOTICES
                             else BothNotices(self._relayed, self._published))
        # History's own records to kadence.requests (child workflows) are signed, so that a
        # protected namespace takes them (ingress_auth.py history_principal).
        signer = self._ingress.history_signer() if self._ingress is not None else None
        if self._ingress is not None and signer is None:
            log.warning("the ingress policy names neither history_principal nor frontend_principal: history's own "
                        "records (child workflows) to protected namespaces will be dead-lettered")
        producer = self._producer = kafka.new_producer(self.settings.kafka_bootstrap, self.settings.kafka_security,
                                                       signer=signer)
        await producer.start()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=GROUP,
            enable_auto_commit=False,  # offsets live in PostgreSQL, in the batch transaction
            auto_offset_reset="earliest",
            session_timeout_ms=self.settings.session_timeout_ms,
            heartbeat_interval_ms=max(100, self.settings.session_timeout_ms // 4),
            fetch_max_wait_ms=self.fetch_wait_ms,
            max_poll_records=2000,
            **client_options(self.settings.kafka_security),
        )
        self._observer = observer_factory(self._consumer)  # telemetry when tracing or metrics are on
        self._consumer.subscribe([kafka.REQUESTS], listener=_Rebalance(self))
        await _said_while_waiting(self._consumer.start(), JOIN_REPORT_S,
                                  f"history: the broker has not answered consumer group {GROUP}'s join yet;"
                                  " the start waits for its partitions")
        self._task = watch(asyncio.create_task(self._consume(), name="history-consumer"),
                           "the history consumer task", self.fatal)
        self._start_jobs()

    async def _serve(self) -> None:
        """Start the HTTP server when asked (health), or when frontends in other processes may
        send command notices: before any shard is acquired, so shards.owner carries its address."""
        s = self.settings
        notices = isinstance(self.tasks, OutboxTasks) and s.command_notices
        if notices and self._ingress is not None:
            # A noticed command is taken as handed over, without the signature check a fetched
            # record gets: with signed ingress, commands come by fetch alone.
            log.info("signed ingress (KADENCE_INGRESS_KEYS): command notices are off")
            notices = False
        if notices:
            try:
                internal_auth.check_bind("history's command notices", s.history_health_host, key=s.internal_key,
                                         insecure=s.insecure)
            except UnsafeBind as exc:
                log.warning("%s; command notices are off", exc)  # commands then come by fetch alone
                notices = False
        # Commands noticed: the fetch is the fallback, with the longer wait (fetch_waits.py).
        self.fetch_wait_ms = fetch_wait_ms(s, Consumer.HISTORY, noticed=notices)
        if s.history_health_port is None and not notices:
            return
        self.health_server = HealthServer(self.health, self.fatal, notices=self.noticed_commands if notices else None,
                                          counts=self.notice_counts, internal_key=s.internal_key)
        url = await self.health_server.start(s.history_health_host, s.history_health_port or 0)
        if notices:
            self.owner = owner_name(s.instance_id, url)
        log.info("history serving at %s (health%s)", url, ", command notices" if notices else "")

    def owned(self) -> dict[int, int]:
        """The shards this process holds now, with the range_id each was acquired with."""
        return {p: shard.range_id for p, shard in self.shards.items() if not shard.lost.is_set()}

    def _start_jobs(self) -> None:
        """Retention and the scheduler, over the owned shards (retention.py, scheduler.py); each
        heals through outages (periodic.py), and one that ends anyway is fatal (watch)."""
        assert self.pool is not None
        s = self.settings
        self.retention = RetentionJob(self.pool, self.owned, batch=s.retention_batch)
        assert self._producer is not None
        self.scheduler = Scheduler(self.pool, self._producer, self.owned)
        self._jobs = [
            watch(asyncio.create_task(run_every("retention", lambda: s.retention_interval_ms / 1000,
                                                self.retention.round), name="history-retention"),
                  "the retention job", self.fatal),
            watch(asyncio.create_task(run_every("scheduler", lambda: s.scheduler_interval_ms / 1000,
                                                self.scheduler.round), name="history-scheduler"),
                  "the scheduler", self.fatal),
        ]
        if s.trim_interval_s > 0:
            # Its own connection: a broker that drops it on DeleteRecords disturbs no shard.
            self.trimmer = RequestTrimmer(self.pool, self.owned, s.kafka_bootstrap, s.kafka_security,
                                          keep_s=s.trim_keep_s)
            self._jobs.append(watch(asyncio.create_task(
                run_every(f"trimming {kafka.REQUESTS}", lambda: s.trim_interval_s, self.trimmer.round),
                name="history-trim"), "the kadence.requests trimmer", self.fatal))

    async def stop(self) -> None:
        """Stop; also after a start that failed half-way. Each step runs whatever an earlier
        one raised (raised at the end): a consumer, producer or pool left behind would go on."""
        self._stopping = True

        async def release_the_rest() -> None:
            # A rebalance under way when the stop began may have finished taking partitions
            # since: their shards must not outlive the pool.
            await self._release(list(self.shards))

        async with contextlib.AsyncExitStack() as then:  # run last pushed first
            if self._own_pool and self.pool is not None:
                then.push_async_callback(self.pool.close)
            then.push_async_callback(self._at_commit.close)
            then.push_async_callback(self._relayed.close)
            if self._producer is not None:
                then.push_async_callback(self._producer.stop)
            then.push_async_callback(release_the_rest)
            if self._consumer is not None:
                then.push_async_callback(stop_consumer, self._consumer)
            if self.trimmer is not None:
                then.push_async_callback(self.trimmer.close)
            # No step inline: one that raised (a server's stop) would skip the tasks and
            # shards after it, left running beside a closed pool.
            then.push_async_callback(release_the_rest)
            then.push_async_callback(cancel, self._task)
            then.push_async_callback(cancel, self._gate_task)
            if self.health_server is not None:
                then.push_async_callback(self.health_server.stop)
            for job in reversed(self._jobs):
                then.push_async_callback(cancel, job)

    async def _acquire(self, partitions: list[int]) -> None:
        assert self._consumer is not None and self._producer is not None
        for p in partitions:
            if p in self.shards or self._stopping:
                continue
            shard = Shard(p, self.store, self._producer, self.owner, self._shard_config())
            tp = TopicPartition(kafka.REQUESTS, p)
            backoff = outage.Backoff(f"acquiring shard {p}", log)
            while True:
                # An assigned partition without its shard would sit frozen: wait out an outage,
                # taking the shard over again from the start (its range_id is ours either way).
                try:
                    offset, replay_until = await self._prepare(shard, tp)
                    break
                except outage.TRANSIENT as exc:
                    if not outage.is_transient(exc) or self._stopping:
                        raise
                    await backoff.wait(exc)
            backoff.recovered()
            self._consumer.seek(tp, offset)
            shard.start_at(offset, replay_until=replay_until, skip_to=functools.partial(self._skip_to, tp),
                           fetch_needed=functools.partial(self._fetch_needed, p))
            if self._stopping:
                return  # the service stopped while this shard was being acquired
            shard.start()
            self.shards[p] = shard

    async def _prepare(self, shard: Shard, tp: TopicPartition) -> tuple[int, int]:
        """Take ``shard`` over and find where it resumes: (offset, replay_until)."""
        assert self._consumer is not None
        p = shard.shard_id
        offset = await shard.acquire()
        end = (await self._consumer.end_offsets([tp]))[tp]
        fresh = p in self._fresh
        if offset > end and not fresh and await log_end.serves_record_before(
                self.settings.kafka_bootstrap, self.settings.kafka_security, tp, offset):
            # Not past: the broker reports its last batch's base (the development broker).
            log.debug("shard %d: log end %d reported below the stored offset %d, whose record before"
                      " is served: not past", p, end, offset)
            end = offset
        how = resume_from(offset, end, fresh_broker=fresh, rewind_lost=self.settings.rewind_lost_partitions)
        if how is Resume.STORED:
            if offset > end:
                # Never rewind on a guess (see resume.py): the broker may report a batch's base.
                log.warning("shard %d: stored offset %d is past the log end %d (the broker no longer serves"
                            " record %d); resuming at %d (KADENCE_REWIND_LOST_PARTITIONS=1 re-reads a"
                            " partition the broker lost)", p, offset, end, offset - 1, offset)
            replay_until = await self.store.replay_until(p)
        else:
            # A new broker, or one that lost records: tasks it carried may be gone too,
            # so send every unstarted task again.
            if how is Resume.REWIND:
                log.warning("shard %d: stored offset %d is past the log end %d; rewinding to 0 as told,"
                            " records below %d are taken as copies", p, offset, end, offset)
            replay_until = await self.store.rewind(p, shard.range_id, fresh=how is Resume.FRESH)
            offset = 0
            await shard.redispatch(force=True)
        self._fresh.discard(p)  # only once the rewind it asks for is done
        return offset, replay_until

    def _shard_config(self) -> ShardConfig:
        s = self.settings
        assert self._observer is not None
        return ShardConfig(
            tasks=self.tasks, replies=self.replies, notices=self._relayed, at_commit=self._at_commit,
            ingress=self._ingress,
            limits=Limits(max_payload_bytes=s.max_payload_bytes), history_limits=self.history_limits,
            namespace_registered=self._namespace_registered, partitions=s.shards,
            request_id_retention_s=s.request_id_retention_s, tail_run_bytes=s.history_tail_run_bytes,
            tail_shard_bytes=s.history_tail_shard_bytes, timer_ahead_grace_ms=s.timer_ahead_grace_ms,
            on_failure=self._shard_failed, observer=self._observer)

    async def _namespace_registered(self, name: str, read_after: float) -> bool:
        """History's intake: looked up in a read begun at ``read_after`` (its batch's start)
        or later, so a namespace created before the batch's records is never refused."""
        return await self.namespaces.is_registered(name, read_after=read_after)

    async def _release(self, partitions: list[int]) -> None:
        for p in partitions:
            shard = self.shards.pop(p, None)
            if self._gate is not None:
                self._gate.forget(p)
            if shard is not None:
                await shard.stop()

    def _shard_failed(self, shard: Shard, exc: BaseException) -> None:
        """A loop of ``shard`` died (not an outage): restart it, within the bound, or stop."""
        now = time.monotonic()
        while self._restarted and now - self._restarted[0] > SHARD_RESTART_WINDOW_S:
            self._restarted.popleft()
        if len(self._restarted) >= MAX_SHARD_RESTARTS:
            self.fatal.declare(f"history shard {shard.shard_id} failed ({exc!r}) after {len(self._restarted)}"
                               f" shard restarts in {SHARD_RESTART_WINDOW_S:.0f} s")
            return
        self._restarted.append(now)
        log.error("shard %d will be restarted from its stored offset (restart %d of at most %d in %.0f s)",
                  shard.shard_id, len(self._restarted), MAX_SHARD_RESTARTS, SHARD_RESTART_WINDOW_S)
        self._restarts.add(shard.shard_id)

    async def _restart_failed(self) -> None:
        """Restart the shards whose loop died: release, then acquire again if still assigned.
        Run by the consumer task between fetches, so no record fetched for the old shard is
        fed to the new one past the offset it seeks to."""
        assert self._consumer is not None
        while self._restarts:
            p = self._restarts.pop()
            shard = self.shards.get(p)
            if shard is None or shard.failure is None:
                continue  # revoked meanwhile, or already a new shard
            await self._release([p])
            if TopicPartition(kafka.REQUESTS, p) in self._consumer.assignment():
                await self._acquire([p])
                log.info("shard %d restarted", p)

    def health(self) -> HealthReport:
        """The shards owned here: running, retrying or stopped (see health.py)."""
        shards = []
        for p, shard in list(self.shards.items()):
            shards.append(shard.health(self._lag(p, shard)))
        return report(shards, self.settings.stall_after_ms / 1000, fatal=self.fatal.reason)

    def _lag(self, partition: int, shard: Shard) -> int | None:
        if self._consumer is None:
            return None
        try:
            end = self._consumer.highwater(TopicPartition(kafka.REQUESTS, partition))
        except (KeyError, AttributeError, AssertionError, ValueError):
            return None  # not assigned any more
        return None if end is None else max(0, end - shard.consumed)

    def _skip_to(self, tp: TopicPartition, offset: int) -> None:
        if self._consumer is not None and tp in self._consumer.assignment():
            self._consumer.seek(tp, offset)

    def _fetch_needed(self, partition: int) -> None:
        if self._gate is not None:
            self._gate.fetch(partition)

    def take_queued(self, partition: int, key: bytes, value: bytes, headers: Headers,
                    acked: asyncio.Future[Any], checked: Limits | None = None) -> None:
        """A command a frontend in this process has just queued for the broker (with its trace
        ``headers``), and the future of the broker's answer: the co-located command bus
        (services/common/colocation.py). If this process owns the partition, its shard takes
        the command without waiting for the fetch: ahead of the acknowledgement when it has
        nothing else to do (Intake.offer_early), otherwise once acknowledged (Intake.offer)."""
        if self._gate is None and self._consumer is not None and not self._stopping:
            self._gate = FetchGate(self._consumer, self.shards)
            self._gate_task = watch(asyncio.create_task(self._gate.run(), name="history-fetch-gate"),
                                    "the history fetch gate", self.fatal)
        shard = self.shards.get(partition)
        if shard is None or shard.stopped:
            return
        if self._gate is not None:
            self._gate.in_flight[partition] += 1
        shard.queued(key)  # until answered, a firing of the run waits for it (Intake.hold)
        if not commands_grouped():  # one of a group: taken with the rest once acknowledged
            shard.offer_early(HandedCommand(kafka.REQUESTS, partition, -1, key, value, headers, checked), acked)
        # Callbacks run in the order the broker acknowledged the records, so the shard is
        # offered its partition's commands in offset order.
        acked.add_done_callback(functools.partial(self._acked, shard, partition, key, value, headers, checked))

    def _acked(self, shard: Shard, partition: int, key: bytes, value: bytes, headers: Headers,
               checked: Limits | None, acked: asyncio.Future[Any]) -> None:
        ok = not acked.cancelled() and acked.exception() is None
        shard.answered(key, acked.result().offset if ok else None)  # the shard it was counted on
        if self._gate is not None:
            self._gate.in_flight[partition] -= 1
            if ok:
                self._gate.acked(partition, acked.result().offset)  # before the shard may drop it
        if ok:
            self.take_acked(partition, acked.result().offset, key, value, headers, checked)

    def take_acked(self, partition: int, offset: int, key: bytes, value: bytes, headers: Headers = (),
                   checked: Limits | None = None) -> None:
        """A command the broker has acknowledged at ``offset``: its shard, if this process
        owns it, takes it without waiting for the fetch (see Intake.offer)."""
        shard = self.shards.get(partition)
        if shard is not None and not shard.stopped:
            shard.offer(HandedCommand(kafka.REQUESTS, partition, offset, key, value, headers, checked))

    def notice_counts(self) -> dict[str, object]:
        """Command notices received and reply notices sent (GET /internal/notices)."""
        return {"commands": dataclasses.asdict(self.command_notices),
                "replies": dataclasses.asdict(self.reply_notices.counts) if self.reply_notices else None}

    def noticed_commands(self, partition: int, notices: list[CommandNotice]) -> NoticeOutcome:
        """Commands a frontend in another process saw the broker acknowledge on ``partition``
        (services/common/command_notices.py): offered to the shard, if it runs here, as a
        co-located frontend's acknowledged commands are (Intake.offer: taken only at the very
        next offset, otherwise left to the fetch)."""
        self.command_notices.received += len(notices)
        if not self._offer(partition, notices):
            self.command_notices.not_owned += len(notices)
            return NoticeOutcome(not_owned=len(notices))
        return NoticeOutcome(offered=len(notices))

    def offer_own(self, partition: int, notices: list[CommandNotice]) -> None:
        """Commands this process's relay published to ``partition`` (notices.OwnCommands):
        offered to its shard if it runs here, as noticed commands are; otherwise the owner's
        fetch takes them."""
        if self._offer(partition, notices):
            self.command_notices.own += len(notices)

    def _offer(self, partition: int, notices: list[CommandNotice]) -> bool:
        """Offer acknowledged commands to ``partition``'s shard (Intake.offer); False when no
        shard of it runs here."""
        shard = self.shards.get(partition)
        if shard is None or shard.stopped:
            return False
        for n in notices:
            shard.offer(HandedCommand(kafka.REQUESTS, partition, n.offset, n.key, n.value, n.headers))
        return True

    async def _consume(self) -> None:
        assert self._consumer is not None
        while True:
            if self._restarts:
                await self._restart_failed()
            try:
                try:
                    batches = await self._consumer.getmany(timeout_ms=1000)
                except unreadable.UNREADABLE_ERRORS:
                    # A record the client cannot unpack fails every fetch of its partition: find
                    # it and have its shard dead-letter it (unreadable.py).
                    await self._isolate_unreadable()
                    continue
            except outage.TRANSIENT as exc:  # isolating it asks the broker too
                if not outage.is_transient(exc):
                    raise
                await self._consume_backoff.wait(exc)
                continue
            self._consume_backoff.recovered()
            for tp, records in batches.items():
                await self._feed(tp, records)

    async def _isolate_unreadable(self) -> None:
        assert self._consumer is not None
        assigned = self._consumer.assignment()
        given = {tp: shard.intake.fed for p, shard in sorted(self.shards.items())
                 if not shard.stopped and (tp := TopicPartition(kafka.REQUESTS, p)) in assigned}
        if not await unreadable.isolate(self._consumer, given, self._feed):
            # The record is on a partition whose shard is not acquired (yet): no busy loop meanwhile.
            await asyncio.sleep(0.1)

    async def _feed(self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        shard = self.shards.get(tp.partition)
        if shard is None or shard.stopped:
            return
        await shard.feed(records)
