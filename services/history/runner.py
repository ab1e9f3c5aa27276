"""A shard's batch runner: run a batch of commands and timers, commit it, then hand it on.

For each batch the intake gives it, the runner looks up the current runs it lacks (one
query), runs every command through its operation (the handlers) into one BatchContext,
and commits one PostgreSQL transaction with the consumed offset, fenced by range_id.
What fails is told apart:

- a command an operation refuses, or that cannot be decoded, validated or admitted, is
  dead-lettered (with a reply to its sender) and the batch runs again without it;
- an outage (PostgreSQL away) drops what the batch changed in memory and redoes the batch
  once it is back; so do a start that met a run the cache had let go (WorkflowNotNew) and
  a request id applied before and forgotten (RequestSeen);
- a commit refused for what a command holds is bisected down to the command at fault
  (poison.py), which is dead-lettered while the rest commit;
- lost ownership ends the shard.

Only after the commit does anything leave: tasks and replies to the services in this
process (the task and reply sinks of services/common/colocation.py), then the outbox to
the relay, the timers and re-dispatch their changes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from kadence_protocol import avro
from kadence_protocol.tracing import trace_headers
from services.common import kafka, outage, unreadable, validation
from services.common.colocation import ReplySink, TaskSink
from services.common.ingress_auth import IngressPolicy
from services.common.outcome import outcome

from . import engine, poison, refusals, routing
from .builder import Mutation
from .cache import RunCache
from .context import BatchContext
from .errors import HistoryError, ShardOwnershipLost, WorkflowNotNew
from .intake import Batch, Early, Handed, Intake
from .ledger import Ledger, RequestSeen
from .limits import DEFAULT_HISTORY_LIMITS, HistoryLimits
from .memory import Heartbeats
from .neighbours import Closed, HandedCommand
from .observer import ShardObserver
from .redispatch import Redispatcher
from .relay import OutboxRelay
from .store import HistoryStore
from .summary import waiting_updates
from .timers import TimerQueue

if TYPE_CHECKING:
    from .shard import Shard

log = logging.getLogger("services.history.shard")

EARLY_ACK_WAIT_S = 1.0  # how long a command taken early may wait for its acknowledgement

Handler = Callable[[engine.Context, dict[str, Any]], Awaitable[None]]
Dead = dict[int, tuple[ConsumerRecord[bytes, bytes], str]]  # per offset, the record and why


@dataclass(frozen=True)
class Admission:
    """What the runner checks of a command before its operation runs."""

    handlers: dict[str, Handler]
    limits: validation.Limits = validation.DEFAULT_LIMITS  # what a command may hold (validation.py)
    history_limits: HistoryLimits = DEFAULT_HISTORY_LIMITS  # how long a run's history may grow (limits.py)
    ingress: IngressPolicy | None = None  # who may send commands to which namespace; None: anyone
    # Whether a namespace is registered, by a read of the names started at the loop time given
    # or later (namespaces.py); None: not checked.
    namespace_registered: Callable[[str, float], Awaitable[bool]] | None = None
    # kadence.requests' partition count, to refuse a record on another shard's partition
    # (routing.py); 0: not checked.
    partitions: int = 0


class _Poison(Exception):
    """A record whose command made an operation raise; it goes to the DLQ."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(reason)
        self.offset = offset
        self.reason = reason


class BatchRunner:
    def __init__(self, shard: Shard, *, store: HistoryStore, producer: AIOKafkaProducer, intake: Intake,
                 cache: RunCache, relay: OutboxRelay, timers: TimerQueue, redispatcher: Redispatcher,
                 ledger: Ledger, heartbeats: Heartbeats, tasks: TaskSink, replies: ReplySink,
                 admission: Admission, backoff: outage.Backoff, observer: ShardObserver) -> None:
        self._shard = shard  # what a BatchContext reads (context.py)
        self.shard_id = shard.shard_id
        self.store = store
        self.producer = producer
        self.intake = intake
        self.cache = cache
        self.relay = relay
        self.timers = timers
        self.redispatcher = redispatcher
        self.ledger = ledger
        self.heartbeats = heartbeats
        self.tasks = tasks
        self.replies = replies
        self.admission = admission
        self.backoff = backoff
        self.observer = observer
        self._run_command = observer.wrap_command(self._command)
        self.range_id = 0
        self.last_progress = time.time()  # the last commit (or the start), for the health report
        # When the batch under way began (None between batches): a batch waiting on a database
        # that neither answers nor fails is no outage to retry, and the health report tells it.
        self.busy_since: float | None = None

    def fence(self, range_id: int) -> None:
        """Commit under ``range_id``, the one the shard was acquired with."""
        self.range_id = range_id

    async def run(self) -> None:
        """The shard loop: take what the intake has, in order, batch by batch."""
        intake = self.intake
        while True:
            item = await intake.next()
            if isinstance(item, Early):
                # The produce request goes out from tasks of the producer's own, a couple of
                # loop turns after the command was queued: let it leave first.
                await asyncio.sleep(0)
                await asyncio.sleep(0)
                await self.process([Handed([item.command])], early=item.acked)
            else:
                batch = intake.batch(item)
                if batch:
                    await self.process(batch)
            intake.after_batch()

    async def process(self, batch: Batch, early: asyncio.Future[Any] | None = None) -> None:
        """Run a batch and commit it; ``early``: the batch is one command taken ahead of its
        acknowledgement (Intake.offer_early), which is this future."""
        self.observer.batch(sum(len(i) if isinstance(i, list) else 1 for i in batch))
        self.busy_since = time.time()
        try:
            await self._process(batch, early)
        finally:
            self.busy_since = None
        self.observer.processed(self.intake.consumed)

    def _forget(self, ctx: BatchContext) -> None:
        self.cache.forget(t.state for t in ctx.transitions.values())

    async def _process(self, batch: Batch, early: asyncio.Future[Any] | None = None, *,
                       bisecting: bool = False, dead: Dead | None = None) -> None:
        """``bisecting``: a part of a batch the store refused (poison.py), which raises the
        store's refusal instead of bisecting again; ``dead``: its records to dead-letter."""
        dead = {} if dead is None else dead
        no_current, assumed_new = await self.cache.look_up_current(batch)
        while True:
            ctx = BatchContext(self._shard, int(time.time() * 1000), no_current,
                               began=asyncio.get_running_loop().time())
            try:
                last_offset = await self._run(ctx, batch, dead)
            except _Poison as failed:
                self._forget(ctx)
                record = next(r for item in batch if isinstance(item, list) for r in item if r.offset == failed.offset)
                dead[failed.offset] = (record, failed.reason)
                continue
            except outage.TRANSIENT as exc:
                # A state load found PostgreSQL gone: redo the batch from scratch once it is back.
                if not outage.is_transient(exc):
                    raise
                self._forget(ctx)
                await self.backoff.wait(exc)
                continue
            if early is not None:
                offset = await _acknowledged(early) if not dead else None
                if offset is None or not self.intake.took_early(offset):
                    self._forget(ctx)  # not the next record (or refused, or dead): the usual path takes it
                    return
                last_offset = offset
                batch, early = [Handed([batch[0][0]._replace(offset=offset)])], None  # a retry runs it as handed
            mutations = ctx.close()
            outbox = self.relay.number(mutations, ctx.replies)
            closed: list[Closed] = [(m.state.run_id, outcome(m.state.status or "", m.state.run_id,
                                                             m.state.outcome_fields()))
                                    for m in mutations if m.closed]
            try:
                if dead:
                    await kafka.send_dead_letters(self.producer, [
                        (r.key, kafka.dead_letter(source_topic=r.topic, partition=r.partition, offset=r.offset,
                                                  key=r.key, value=r.value, reason=reason))
                        for r, reason in dead.values()])
                await self.store.commit(self.shard_id, self.range_id, None if last_offset is None else last_offset + 1,
                                        mutations, outbox, ctx.timer_rows_deleted, list(ctx.heartbeats.values()),
                                        closed, assumed_new, ctx.requests, ctx.run_starts)
            except ShardOwnershipLost:
                self._forget(ctx)
                raise
            except WorkflowNotNew:
                # A workflow started as new has a run the cache had let go: nothing was
                # written; run the batch again with every current run looked up.
                self._forget(ctx)
                self.relay.not_committed(outbox)
                no_current, assumed_new = await self.cache.look_up_current(batch, assume_new=False)
                continue
            except RequestSeen:
                # A request id applied before and no longer in memory: nothing was written;
                # run the batch again knowing it (it then gets its first answer).
                self._forget(ctx)
                self.relay.not_committed(outbox)
                await self.ledger.look_up(self.store, ctx.requests)
                continue
            except poison.CONTENT_ERRORS as exc:
                # Refused for what a command holds: the same batch would be refused forever.
                self._forget(ctx)
                self.relay.not_committed(outbox)
                if bisecting:
                    raise
                log.warning("shard %d: batch commit refused (%r); isolating the command(s) at fault",
                            self.shard_id, exc)
                await poison.bisect(poison.units(batch), self._commit_part, self._give_up, failed=exc)
                return
            except outage.DATABASE_ERRORS as exc:
                if not await self._landed(exc, last_offset):
                    # Nothing was written: drop what this batch changed in memory and redo it.
                    self._forget(ctx)
                    self.relay.not_committed(outbox)
                    continue
                log.warning("shard %d: the commit of offsets up to %d landed though its answer was lost (%r)",
                            self.shard_id, last_offset, exc)
            self.backoff.recovered()
            self.last_progress = time.time()
            # The services here first: the poll or wait they wake then runs before the relay's publication.
            woke = self._hand_over(ctx, mutations, closed)
            await self._committed(ctx, mutations, outbox, woke=woke)
            return

    async def _landed(self, exc: BaseException, last_offset: int | None) -> bool:
        """After a failed commit, once the database answers again: whether it landed all the
        same (the connection dropped after PostgreSQL committed, before its answer came).
        Redone, such a batch would apply its commands a second time (a signal without a
        request id twice); the shard's stored offset tells, being only ever moved by this
        owner's commits. A batch of timer firings alone moves no offset: redone, it finds
        its timers fired and its rows gone."""
        while True:
            await self.backoff.wait(exc)
            if last_offset is None:
                return False
            try:
                return await self.store.committed_offset(self.shard_id, self.range_id) > last_offset
            except outage.DATABASE_ERRORS as again:
                exc = again

    async def _commit_part(self, part: Sequence[Any]) -> None:
        await self._process(list(part), bisecting=True)

    async def _give_up(self, unit: Any, exc: Exception) -> None:
        """A record or timer firing the store refuses on its own: dead-letter the record (and
        commit past it); a timer firing stays in its table, to be loaded again later."""
        if isinstance(unit, engine.TimerFiring):
            log.error("shard %d: the store refused timer %s (%r); it stays pending", self.shard_id, unit.key, exc)
            self.timers.give_back(unit.key)
            return
        record = unit[0]
        log.error("shard %d: the store refused the command at offset %d (%r); dead-lettering it",
                  self.shard_id, record.offset, exc)
        await self._process([unit], bisecting=True, dead={record.offset: (record, poison.reason(exc))})

    async def _run(self, ctx: BatchContext, batch: Batch, dead: Dead) -> int | None:
        last_offset: int | None = None
        consumed = self.intake.consumed
        # A timer's effects follow the records before it (the batch's first less one, taken
        # early: the next of the partition less one), for the run start offsets of ledger.py.
        first = next((r.offset for item in batch if isinstance(item, list) for r in item), consumed)
        ctx.offset = (first if first >= 0 else consumed) - 1
        for item in batch:
            if isinstance(item, engine.TimerFiring):
                if not self.timers.current(item):
                    continue  # its row was deleted or re-armed by a commit after it was handed over
                ctx.headers = ()
                await engine.fire_timer(ctx, item)
                continue
            for record in item:
                last_offset = record.offset
                if record.offset in dead:
                    poison.reply_refused(ctx, record, dead[record.offset][1])
                    continue
                reason = await self._run_command(ctx, record)
                if reason is not None:
                    dead[record.offset] = (record, reason)
                    poison.reply_refused(ctx, record, reason)
        return last_offset

    async def _command(self, ctx: BatchContext, record: ConsumerRecord[bytes, bytes]) -> str | None:
        """Run one command; return a dead-letter reason when it cannot be taken."""
        if isinstance(record, unreadable.Unreadable):
            return record.reason
        if record.value is None:
            return "record has no value"
        try:
            name, cmd = avro.decode(record.value)
        except avro.DecodeError as exc:
            return f"undecodable: {exc}"
        a = self.admission
        handler = a.handlers.get(name)
        if handler is None:
            return f"kadence.requests does not take {name} records"
        # A command this process's frontend checked under the same limits, on the record it
        # encoded, passed this very check there: not run twice (docs/colocation.md).
        if not (type(record) is HandedCommand and record.checked == a.limits):
            try:
                validation.check_command(name, cmd, a.limits)
            except validation.Invalid as exc:
                return f"{name} refused: {exc.message}"
        if "namespace" in cmd and (wrong := routing.misrouted(
                record.key, record.partition, cmd["namespace"], cmd["workflow_id"], a.partitions)):
            return wrong
        if ("namespace" in cmd and a.namespace_registered
                and not await a.namespace_registered(cmd["namespace"], ctx.began)):
            return f"namespace {cmd['namespace']!r} is not registered"
        # Signed ingress (ingress_auth.py); commands handed over by a frontend here are not broker records.
        if a.ingress is not None and not isinstance(record, HandedCommand):
            refused = a.ingress.check(record, cmd)
            if refused is not None:
                return refused
        ctx.headers = trace_headers(record.headers)
        try:
            ctx.offset = record.offset if record.offset >= 0 else self.intake.consumed  # taken early: the next
            ctx.taken = refusals.taken(name, cmd, record, ctx.offset)  # refused with no reply_to: dead-lettered
            ctx.command_name = name
            if await self.ledger.admit(ctx, name, cmd, ctx.offset):
                await handler(ctx, cmd)
        except (HistoryError, KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, ShardOwnershipLost):
                raise
            log.exception("shard %d: %s at offset %d failed", self.shard_id, name, record.offset)
            raise _Poison(record.offset, f"{name} failed: {exc!r}") from exc
        finally:
            ctx.taken = None
            ctx.command_name = ""
        return None

    def _hand_over(self, ctx: BatchContext, mutations: list[Mutation], closed: list[Closed]) -> bool:
        """Committed is enough to act on: hand what the batch produced to the services here;
        say whether it woke any (tasks, replies, closes)."""
        # A workflow task goes with the update requests waiting as of this commit: matching
        # gives them to a poll it hands the task to now, which then need not read them.
        tasks = [task._replace(updates=waiting_updates(m.state)) if task.name == "WorkflowTask" else task
                 for m in mutations for task in m.local_tasks]
        if tasks:
            self.tasks.hand_over(tasks)
        if ctx.local_replies:
            self.replies.replies(ctx.local_replies)
        if closed:
            self.replies.closed(closed)
        return bool(tasks or ctx.local_replies or closed)

    async def _committed(self, ctx: BatchContext, mutations: list[Mutation], outbox: list[Any], *,
                         woke: bool) -> None:
        """The batch's bookkeeping after its hand-over. When the hand-over ``woke`` services here
        (polls, result waits), one loop turn first: they answer before the bookkeeping and
        before the next batch (a burst's next batch is milliseconds of work that would
        otherwise come first when the inbox has it waiting). The bookkeeping is done even if
        the loop is cancelled in that turn: the commit stands."""
        if not woke:
            self._after_commit(ctx, mutations, outbox)
            return
        try:
            await asyncio.sleep(0)
        finally:
            self._after_commit(ctx, mutations, outbox)

    def _after_commit(self, ctx: BatchContext, mutations: list[Mutation], outbox: list[Any]) -> None:
        self.ledger.committed(ctx)
        for m in mutations:
            self._keep_tail(m)
            self.cache.remember(m.state)
        self.redispatcher.committed(mutations)
        for (run_id, sid), row in ctx.heartbeats.items():
            self.heartbeats[(run_id, sid)] = (row[4], row[3])
        for m in mutations:
            self.heartbeats.prune(m.state)
        self.timers.committed(mutations, ctx.timer_rows_deleted)
        self.relay.committed(outbox, mutations)
        self.observer.committed(mutations)

    def _keep_tail(self, m: Mutation) -> None:
        """Extend the run's tail by its newly committed events, from the first one the next
        workflow task brings on."""
        s = m.state
        if not s.running:
            self.cache.tails.pop(s.run_id, None)
            return
        new = [(e["event_id"], data, e) for e, data in zip(m.events, m.encoded_events, strict=True)]
        # A run loaded from the store starts with an unknown tail: keep what is new (a
        # contiguous suffix); after its next completed workflow task it is whole again.
        self.cache.tails.extend(s.run_id, s.carry_from, new)


async def _acknowledged(waiter: asyncio.Future[Any]) -> int | None:
    """The offset the broker gave a command taken early; None if it refused or is slow."""
    try:
        async with asyncio.timeout(EARLY_ACK_WAIT_S):
            acked = await waiter
    except TimeoutError:
        return None
    if acked.cancelled() or acked.exception() is not None:
        return None
    return int(acked.result().offset)
