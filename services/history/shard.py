"""One history shard (= one kadence.requests partition) owned by this process.

The shard loop takes records and due timers in order, folds a batch of them
into mutable state, and commits one PostgreSQL transaction holding the new
events, snapshots, outbox rows, timer rows and the consumed offset. Only after
the commit does the relay publish the outbox to Kafka, and the services in this
process take what is theirs (neighbours.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from kadence_protocol import avro
from services.common import kafka, outage, validation
from services.common.ingress_auth import IngressPolicy
from services.common.outcome import outcome

from . import cancellation, engine, poison, reset, routing, updates
from .builder import Mutation, OutboxMessage, Transition
from .children import apply_parent_close_policy, notify_child_outcome, signal_external, start_child
from .context import BatchContext
from .errors import HistoryError, ShardOwnershipLost, WorkflowNotNew
from .health import ShardHealth, ShardState
from .ledger import Ledger, RequestSeen, trim_loop
from .limits import DEFAULT_HISTORY_LIMITS
from .memory import Heartbeats, Tails
from .neighbours import Closed, HandedCommand, Neighbours
from .state import MutableState
from .store import HistoryStore, OutboxRow

log = logging.getLogger(__name__)

MAX_BATCH = 500
CACHE_SIZE = 10_000
TIMER_WINDOW_MS = 30_000
REDISPATCH_AFTER_MS = 10_000
REDISPATCH_MAX_MS = 300_000
OUTBOX_CLEANUP_S = 0.2
# Records for the audit log alone (kadence.history) wait this long for more to go with them.
AUDIT_GATHER_S = 0.010
EARLY_ACK_WAIT_S = 1.0  # how long a command taken early may wait for its acknowledgement
# The shard's loops, each run under _guard, each with its own outage backoff.
LOOP, RELAY, TIMERS, REDISPATCH, TRIM = LOOPS = ("loop", "relay", "timers", "redispatch", "trim")

Handler = Callable[[engine.Context, dict[str, Any]], Awaitable[None]]


async def _signal_with_start(ctx: engine.Context, cmd: dict[str, Any]) -> None:
    await engine.start_workflow(ctx, cmd, with_signal=True)


HANDLERS: dict[str, Handler] = {
    "StartWorkflowExecution": engine.start_workflow,
    "SignalWithStartWorkflowExecution": _signal_with_start,
    "SignalWorkflowExecution": engine.signal_workflow,
    "TerminateWorkflowExecution": engine.terminate_workflow,
    "RecordWorkflowTaskStarted": engine.workflow_task_started,
    "RespondWorkflowTaskCompleted": engine.workflow_task_completed,
    "RespondWorkflowTaskFailed": engine.workflow_task_failed,
    "RecordActivityTaskStarted": engine.activity_started,
    "RespondActivityTaskCompleted": engine.activity_completed,
    "RespondActivityTaskFailed": engine.activity_failed,
    "RecordActivityTaskHeartbeat": engine.activity_heartbeat,
    "RequestCancelWorkflowExecution": cancellation.request_cancel_workflow,
    "RespondActivityTaskCanceled": cancellation.activity_canceled,
    "UpdateWorkflowExecution": updates.request_update,
    "StartChildWorkflowExecution": start_child,
    "SignalExternalWorkflowExecution": signal_external,
    "ChildWorkflowNotice": notify_child_outcome,
    "ApplyParentClosePolicy": apply_parent_close_policy,
    "ResetWorkflowExecution": reset.reset_workflow,
}


class _Handed(list[HandedCommand]):
    """An inbox item of handed-over commands (as opposed to fetched records)."""


class _Early(NamedTuple):
    """An inbox item: a command taken before the broker acknowledged it (Shard.offer_early)."""

    command: HandedCommand  # its offset is not known yet
    acked: asyncio.Future[Any]  # set to the broker's answer once that is settled


class _Poison(Exception):
    """A record whose command made an operation raise; it goes to the DLQ."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(reason)
        self.offset = offset
        self.reason = reason


class Shard:
    # Who may send commands to which namespace (set by the service; None: anyone).
    ingress: IngressPolicy | None = None
    # kadence.requests' partition count, to refuse a record on another shard's partition
    # (set by the service; 0: not checked).
    partitions = 0

    def __init__(self, shard_id: int, store: HistoryStore, producer: AIOKafkaProducer, owner: str) -> None:
        self.shard_id = shard_id
        self.store = store
        self.producer = producer
        self.owner = owner
        self.range_id = 0
        self.next_offset = 0
        # The next offset the loop takes: a record below it was taken already, fetched or
        # handed over. Set from next_offset when the shard starts consuming.
        self.consumed = 0
        # The offset after the last record fed by the consumer; and how to move the
        # consumer's position past records taken by hand-over (no need to fetch them).
        self.fed = 0
        self.skip_to: Callable[[int], None] | None = None
        self.fetched_at = 0.0  # when the loop last took records that came by fetch (monotonic)
        # Called when a command handed over cannot be taken, so its fetched copy must come:
        # the consumer may have stopped fetching the partition (see gate.py).
        self.fetch_needed: Callable[[], None] = _nothing
        self.cache: OrderedDict[str, MutableState] = OrderedDict()
        self.current: OrderedDict[tuple[str, str], str] = OrderedDict()
        # Per cached run, its committed events since the last completed workflow task
        # (or the newest of them): workflow tasks carry these instead of the frontend
        # reading them back from PostgreSQL. Bounded by bytes (memory.py); the service sets
        # the budgets.
        self.tails = Tails()
        self.heartbeats = Heartbeats()
        self.inbox: asyncio.Queue[list[ConsumerRecord[bytes, bytes]] | engine.TimerFiring | _Early] = asyncio.Queue(
            maxsize=64)
        self._idle = False  # the loop waits for an inbox that is empty
        self.relay_queue: asyncio.Queue[list[OutboxRow]] = asyncio.Queue()
        self._urgent = asyncio.Event()  # the relay queue holds records a service or worker waits for
        self.next_outbox_id = 1
        self._legacy_outbox = False  # rows in the table of before migration 0004 are pending
        self.timers = TimerQueue(self)
        self._tasks: list[asyncio.Task[None]] = []
        self.lost = asyncio.Event()
        self._redispatched: dict[str, int] = {}
        self.neighbours = Neighbours()
        # Runs with a task no worker has started, and since when: re-dispatch looks only
        # at these instead of scanning the shard's executions.
        self.unstarted: dict[str, int] = {}
        # Request ids applied and runs' start offsets (ledger.py); the service sets these.
        self.ledger = Ledger(shard_id)
        self.request_id_retention_s = 86_400.0
        # Outages each loop waits out (see outage.py), read by the health report.
        self.backoffs = {name: outage.Backoff(f"shard {shard_id} {name}", log) for name in LOOPS}
        self.last_progress = time.time()  # the last commit (or the start), for the health report
        # Set when a loop died of something other than an outage or lost ownership; the
        # service is told (on_failure) and restarts the shard or stops the process.
        self.failure: BaseException | None = None
        self.stopped_at: float | None = None
        self.on_failure: Callable[[Shard, BaseException], None] | None = None
        self.limits = validation.DEFAULT_LIMITS  # what a command may hold (services/common/validation.py)
        self.history_limits = DEFAULT_HISTORY_LIMITS  # how long a run's history may grow (limits.py)
        # Whether a namespace is registered (namespaces.py); set by the service, None: not checked.
        self.namespace_registered: Callable[[str], Awaitable[bool]] | None = None

    # ---- lifecycle -------------------------------------------------------------------

    async def acquire(self) -> int:
        """Take the shard over; return the offset to consume from."""
        self.range_id, self.next_offset = await self.store.acquire_shard(self.shard_id, self.owner)
        self.unstarted = {s.run_id: _oldest_unstarted(s) for s in await self.store.undispatched(self.shard_id)}
        pending, self._legacy_outbox = await self.store.pending_outbox(self.shard_id)
        self.next_outbox_id = await self.store.next_outbox_id(self.shard_id)
        if pending:
            self.relay_queue.put_nowait(pending)
        log.info("shard %d acquired (range_id %d, offset %d, %d outbox rows pending)",
                 self.shard_id, self.range_id, self.next_offset, len(pending))
        return self.next_offset

    def start(self) -> None:
        loops = dict(zip(LOOPS, (self._loop(), self._relay(), self.timers.run(), self._redispatch_loop(),
                                 trim_loop(self.store, self.shard_id, self.request_id_retention_s)), strict=True))
        for name, coro in loops.items():
            self._tasks.append(asyncio.create_task(self._guard(name, coro), name=f"shard-{self.shard_id}-{name}"))

    async def _guard(self, name: str, coro: Awaitable[None]) -> None:
        """Run one of the shard's loops. Outages are healed inside the loops; what ends one
        here stops the shard: lost ownership quietly (the rebalance follows), anything else
        loudly, handed to the service (on_failure) to restart the shard or stop the process."""
        failure: BaseException
        try:
            await coro
        except ShardOwnershipLost as exc:
            log.warning("%s; shard %d stops here", exc, self.shard_id)
            self.stopped_at = time.time()
            self.lost.set()
            self._drain_inbox()
            return
        except Exception as exc:
            log.critical("shard %d: its %s loop died; the shard stops", self.shard_id, name, exc_info=exc)
            failure = exc
        else:
            failure = RuntimeError(f"the {name} loop returned")  # they never do
            log.critical("shard %d: %s; the shard stops", self.shard_id, failure)
        if self.failure is None:
            self.failure, self.stopped_at = failure, time.time()
            self._drain_inbox()
            if self.on_failure is not None:
                self.on_failure(self, failure)

    @property
    def stopped(self) -> bool:
        """The shard takes no more work: ownership lost, or a loop died."""
        return self.lost.is_set() or self.failure is not None

    def _drain_inbox(self) -> None:
        """Empty the inbox of a shard that stopped: a consumer waiting to feed it must not
        wait for ever (what it fed is fetched again by the next owner, from the stored offset)."""
        while not self.inbox.empty():
            self.inbox.get_nowait()

    def health(self, lag: int | None = None) -> ShardHealth:
        if self.stopped:
            error = repr(self.failure) if self.failure is not None else "shard ownership lost"
            return ShardHealth(self.shard_id, ShardState.STOPPED, self.stopped_at, error, self.last_progress, lag)
        failing = [(b.since or 0.0, name, b) for name, b in self.backoffs.items() if b.retrying]
        if not failing:
            return ShardHealth(self.shard_id, ShardState.RUNNING, None, None, self.last_progress, lag)
        since, _, first = min(failing, key=lambda f: f[0])
        return ShardHealth(self.shard_id, ShardState.RETRYING, since, first.last_error, self.last_progress, lag,
                           tuple(name for _, name, _ in failing))

    async def verify_owner(self) -> None:
        """Raise ShardOwnershipLost if another process took the shard over (range_id moved on)."""
        if await self.store.shard_range_id(self.shard_id) != self.range_id:
            raise ShardOwnershipLost(f"shard {self.shard_id} has a new owner (our range_id {self.range_id} is stale)")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._drain_inbox()

    async def feed(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        if records:
            self.fed = max(self.fed, records[-1].offset + 1)
        await self.inbox.put(records)

    def offer(self, command: HandedCommand) -> None:
        """Take a command as soon as the broker has acknowledged it (see HandedCommand).

        It runs only if it is the very next record of the partition when the loop gets to
        it; otherwise (a record from another producer still to be fetched before it, or
        an inbox full of fetched work) its fetched copy takes the usual path. Either way
        each offset is taken once: the loop skips whatever it has taken already.
        """
        try:
            self.inbox.put_nowait(_Handed([command]))
        except asyncio.QueueFull:
            self.fetch_needed()

    def offer_early(self, command: HandedCommand, acked: asyncio.Future[Any]) -> None:
        """Take a command the broker has yet to acknowledge, if the loop has nothing else to do.

        The loop runs it into a batch while the broker is at work (the ~0.3 ms of a produce
        round trip, otherwise idle), then waits for the acknowledgement: it commits only if
        the command's offset is the very next of the partition, as if it had been fetched.
        Otherwise, or when the broker refuses it, the batch is dropped as a failed commit
        would be, and the command takes the usual path (offer, or the fetch).
        """
        if not self._idle or not self.inbox.empty():
            return
        # The shard's own callback, registered before the frontend's wait: the loop resumes
        # with the acknowledgement before the frontend does.
        acknowledged: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        acked.add_done_callback(functools.partial(_relay_outcome, acknowledged))
        self.inbox.put_nowait(_Early(command, acknowledged))

    def settled(self) -> bool:
        """The loop waits for work and none is queued."""
        return self._idle and self.inbox.empty()

    # ---- cache -----------------------------------------------------------------------

    async def load(self, run_id: str) -> MutableState | None:
        state = self.cache.get(run_id)
        if state is not None:
            self.cache.move_to_end(run_id)
            return state
        state = await self.store.load_state(run_id)
        if state is not None:
            self.remember(state)
        return state

    def remember(self, state: MutableState) -> None:
        self.cache[state.run_id] = state
        self.cache.move_to_end(state.run_id)
        if state.running or (state.namespace, state.workflow_id) not in self.current:
            self.current[(state.namespace, state.workflow_id)] = state.run_id
            self.current.move_to_end((state.namespace, state.workflow_id))
        while len(self.cache) > CACHE_SIZE:
            evicted, _ = self.cache.popitem(last=False)
            self.tails.pop(evicted, None)
        while len(self.current) > CACHE_SIZE:
            self.current.popitem(last=False)

    def _forget(self, ctx: BatchContext) -> None:
        for run_id, t in ctx.transitions.items():
            self.cache.pop(run_id, None)
            self.current.pop((t.state.namespace, t.state.workflow_id), None)

    # ---- the shard loop --------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            self._idle = True
            try:
                item = await self.inbox.get()
            finally:
                self._idle = False
            if isinstance(item, _Early):
                # The produce request goes out from tasks of the producer's own, a couple of
                # loop turns after the command was queued: let it leave first.
                await asyncio.sleep(0)
                await asyncio.sleep(0)
                await self._process([_Handed([item.command])], early=item.acked)
            else:
                batch = self._batch(item)
                if batch:
                    await self._process(batch)
            if self.consumed > self.fed and self.skip_to is not None:
                # Commands taken by hand-over need not come through the consumer as well.
                self.fed = self.consumed
                self.skip_to(self.consumed)

    def _batch(self, item: Any) -> list[Any]:
        """``item`` and what else waits in the inbox, up to MAX_BATCH, less what was taken."""
        batch: list[Any] = []
        size = 0
        while True:
            item = self._untaken(item)
            if item:
                batch.append(item)
                size += _size(item)
            if size >= MAX_BATCH or self.inbox.empty():
                return batch
            item = self.inbox.get_nowait()
            if isinstance(item, _Early):
                item = _Handed()  # only offered to an idle loop; its acknowledged copy follows

    def _untaken(self, item: Any) -> Any:
        """The records of an inbox item that the loop has not taken yet, in offset order."""
        if isinstance(item, _Handed):
            records: list[Any] = [r for r in item if r.offset == self.consumed]
            if not records and item and item[0].offset > self.consumed:
                self.fetch_needed()  # a record of another producer comes first
        elif isinstance(item, list):
            records = item if item and item[0].offset >= self.consumed else [
                r for r in item if r.offset >= self.consumed]
            if records:
                self.fetched_at = time.monotonic()
        else:
            return item  # a timer firing
        if records:
            self.consumed = records[-1].offset + 1
        return records

    async def _process(self, batch: list[Any], early: asyncio.Future[Any] | None = None, *,
                       bisecting: bool = False,
                       dead: dict[int, tuple[ConsumerRecord[bytes, bytes], str]] | None = None) -> None:
        """Run a batch and commit it; ``early``: the batch is one command taken ahead of its
        acknowledgement (offer_early), which is this future. ``bisecting``: a part of a batch
        the store refused (poison.py), which raises the store's refusal instead of bisecting
        again; ``dead``: its records to dead-letter."""
        dead = {} if dead is None else dead
        no_current, assumed_new = await self._look_up_current(batch)
        while True:
            ctx = BatchContext(self, int(time.time() * 1000), no_current)
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
                await self.backoffs[LOOP].wait(exc)
                continue
            if early is not None:
                offset = await self._acknowledged(early) if not dead else None
                if offset is None or offset != self.consumed:
                    self._forget(ctx)  # not the next record (or refused, or dead): the usual path takes it
                    return
                last_offset, self.consumed = offset, offset + 1
                batch, early = [_Handed([batch[0][0]._replace(offset=offset)])], None  # a retry runs it as handed
            mutations = ctx.close()
            outbox = self._number(mutations, ctx.replies)
            closed = [(m.state.run_id, outcome(m.state.status, m.state.run_id, vars(m.state)))
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
                self.next_outbox_id = outbox[0][0] if outbox else self.next_outbox_id
                no_current, assumed_new = await self._look_up_current(batch, assume_new=False)
                continue
            except RequestSeen:
                # A request id applied before and no longer in memory: nothing was written;
                # run the batch again knowing it (it then gets its first answer).
                self._forget(ctx)
                self.next_outbox_id = outbox[0][0] if outbox else self.next_outbox_id
                await self.ledger.look_up(self.store, ctx.requests)
                continue
            except poison.CONTENT_ERRORS as exc:
                # Refused for what a command holds: the same batch would be refused forever.
                self._forget(ctx)
                self.next_outbox_id = outbox[0][0] if outbox else self.next_outbox_id
                if bisecting:
                    raise
                log.warning("shard %d: batch commit refused (%r); isolating the command(s) at fault",
                            self.shard_id, exc)
                await poison.bisect(poison.units(batch), self._commit_part, self._give_up, failed=exc)
                return
            except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
                # Nothing was written: drop what this batch changed in memory and redo it.
                self._forget(ctx)
                self.next_outbox_id = outbox[0][0] if outbox else self.next_outbox_id
                await self.backoffs[LOOP].wait(exc)
                continue
            self.backoffs[LOOP].recovered()
            self.last_progress = time.time()
            # Neighbours first: the poll or wait they wake then runs before the relay's publication.
            self._tell_neighbours(ctx, mutations, closed)
            self._after_commit(ctx, mutations, outbox)
            return

    async def _commit_part(self, part: Sequence[Any]) -> None:
        await self._process(list(part), bisecting=True)

    async def _give_up(self, unit: Any, exc: Exception) -> None:
        """A record or timer firing the store refuses on its own: dead-letter the record (and
        commit past it); a timer firing stays in its table, to be loaded again later."""
        if isinstance(unit, engine.TimerFiring):
            log.error("shard %d: the store refused timer %s (%r); it stays pending", self.shard_id, unit.key, exc)
            self.timers.inflight.discard(unit.key)
            return
        record = unit[0]
        log.error("shard %d: the store refused the command at offset %d (%r); dead-lettering it",
                  self.shard_id, record.offset, exc)
        await self._process([unit], bisecting=True, dead={record.offset: (record, poison.reason(exc))})

    async def _acknowledged(self, waiter: asyncio.Future[Any]) -> int | None:
        """The offset the broker gave a command taken early; None if it refused or is slow."""
        try:
            async with asyncio.timeout(EARLY_ACK_WAIT_S):
                acked = await waiter
        except TimeoutError:
            return None
        if acked.cancelled() or acked.exception() is not None:
            return None
        return int(acked.result().offset)

    async def _look_up_current(self, batch: list[Any], *, assume_new: bool = True) -> tuple[
            frozenset[tuple[str, str]], frozenset[tuple[str, str]]]:
        """Find the current runs of the batch's workflows missing from the cache in one query.

        They join ``self.current``. Returned: the workflows to run as having no run at all,
        and of those, the ones not looked up (``assume_new``: workflows the batch only
        starts are taken as new, and the commit checks it, see store.commit), so a start of
        a new workflow costs no round trip before its commit.
        """
        keys: set[tuple[str, str]] = set()
        starts: set[tuple[str, str]] = set()
        for item in batch:
            if isinstance(item, list):
                for record in item:
                    if record.key is not None:
                        namespace, _, workflow_id = record.key.decode("utf-8", "replace").partition("/")
                        if "\x00" in workflow_id or "\x00" in namespace:
                            continue  # not a workflow the store can hold: the command is refused
                        key = (namespace, workflow_id)
                        if key not in self.current:
                            (starts if assume_new and _is_start(record.value) else keys).add(key)
        new = frozenset(starts - keys)
        if not keys:
            return new, new
        try:
            found = await self.store.current_runs(list(keys))
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
            log.warning("shard %d: current-run look-up failed (%r); each command looks up its own",
                        self.shard_id, exc)
            return new, new
        for key, run_id in found.items():
            self.current[key] = run_id
        return frozenset(keys - found.keys()) | new, new

    async def _run(self, ctx: BatchContext, batch: list[Any],
                   dead: dict[int, tuple[ConsumerRecord[bytes, bytes], str]]) -> int | None:
        last_offset: int | None = None
        # A timer's effects follow the records before it (the batch's first less one, taken
        # early: the next of the partition less one), for the run start offsets of ledger.py.
        first = next((r.offset for item in batch if isinstance(item, list) for r in item), self.consumed)
        ctx.offset = (first if first >= 0 else self.consumed) - 1
        for item in batch:
            if isinstance(item, engine.TimerFiring):
                ctx.headers = ()
                await engine.fire_timer(ctx, item)
                continue
            for record in item:
                last_offset = record.offset
                if record.offset in dead:
                    poison.reply_refused(ctx, record, dead[record.offset][1])
                    continue
                reason = await self._command(ctx, record)
                if reason is not None:
                    dead[record.offset] = (record, reason)
                    poison.reply_refused(ctx, record, reason)
        return last_offset

    async def _command(self, ctx: BatchContext, record: ConsumerRecord[bytes, bytes]) -> str | None:
        """Run one command; return a dead-letter reason when it cannot be taken."""
        if record.value is None:
            return "record has no value"
        try:
            name, cmd = avro.decode(record.value)
        except avro.DecodeError as exc:
            return f"undecodable: {exc}"
        handler = HANDLERS.get(name)
        if handler is None:
            return f"kadence.requests does not take {name} records"
        try:
            validation.check_command(name, cmd, self.limits)
        except validation.Invalid as exc:
            return f"{name} refused: {exc.message}"
        if "namespace" in cmd and (wrong := routing.misrouted(
                record.key, record.partition, cmd["namespace"], cmd["workflow_id"], self.partitions)):
            return wrong
        if "namespace" in cmd and self.namespace_registered and not await self.namespace_registered(cmd["namespace"]):
            return f"namespace {cmd['namespace']!r} is not registered"
        # Signed ingress (ingress_auth.py); commands handed over by a frontend here are not broker records.
        if self.ingress is not None and not isinstance(record, HandedCommand):
            refused = self.ingress.check(record, cmd)
            if refused is not None:
                return refused
        ctx.headers = tuple((k, v) for k, v in (record.headers or ()) if k in ("traceparent", "tracestate"))
        try:
            ctx.offset = record.offset if record.offset >= 0 else self.consumed  # taken early: the next
            if await self.ledger.admit(ctx, name, cmd, ctx.offset):
                await handler(ctx, cmd)
        except (HistoryError, KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, ShardOwnershipLost):
                raise
            log.exception("shard %d: %s at offset %d failed", self.shard_id, name, record.offset)
            raise _Poison(record.offset, f"{name} failed: {exc!r}") from exc
        return None

    def _number(self, mutations: list[Mutation], replies: list[OutboxMessage]) -> list[OutboxRow]:
        """The batch's messages in publication order, all under the batch's outbox id."""
        rows = [(self.next_outbox_id, m) for mut in mutations for m in mut.outbox]
        rows.extend((self.next_outbox_id, m) for m in replies)
        if rows:
            self.next_outbox_id += 1
        return rows

    def _after_commit(self, ctx: BatchContext, mutations: list[Mutation], outbox: list[OutboxRow]) -> None:
        self.ledger.committed(ctx)
        for m in mutations:
            self._keep_tail(m)
            self.remember(m.state)
            if m.state.running and m.state.has_undispatched():
                self.unstarted[m.state.run_id] = _oldest_unstarted(m.state)
            else:
                self.unstarted.pop(m.state.run_id, None)
        for (run_id, sid), row in ctx.heartbeats.items():
            self.heartbeats[(run_id, sid)] = (row[4], row[3])
        for m in mutations:
            self.heartbeats.prune(m.state)
        self.timers.committed(mutations, ctx.timer_rows_deleted)
        if outbox:
            self.relay_queue.put_nowait(outbox)
            if not _audit_only(outbox):
                self._urgent.set()

    def _tell_neighbours(self, ctx: BatchContext, mutations: list[Mutation], closed: list[Closed]) -> None:
        """Committed is enough to act on: hand what the batch produced to the services here."""
        n = self.neighbours
        if n.on_tasks is not None:
            tasks = [task for m in mutations for task in m.local_tasks]
            if tasks:
                n.on_tasks(tasks)
        if n.on_replies is not None and ctx.local_replies:
            n.on_replies(ctx.local_replies)
        if n.on_closed is not None and closed:
            n.on_closed(closed)

    def _keep_tail(self, m: Mutation) -> None:
        """Extend the run's tail by its newly committed events, from the first one the next
        workflow task brings on."""
        s = m.state
        if not s.running:
            self.tails.pop(s.run_id, None)
            return
        new = [(e["event_id"], data, e) for e, data in zip(m.events, m.encoded_events, strict=True)]
        # A run loaded from the store starts with an unknown tail: keep what is new (a
        # contiguous suffix); after its next completed workflow task it is whole again.
        self.tails.extend(s.run_id, s.carry_from, new)

    # ---- outbox relay ----------------------------------------------------------------

    async def _relay(self) -> None:
        published: int | None = None  # the highest outbox id published and not yet deleted
        last_cleanup = 0.0
        while True:
            if published is not None and self.relay_queue.empty():
                try:
                    rows = await asyncio.wait_for(self.relay_queue.get(), OUTBOX_CLEANUP_S)
                except TimeoutError:
                    await self._delete_outbox(published)
                    published, last_cleanup = None, time.monotonic()
                    continue
            else:
                rows = await self.relay_queue.get()
            self._drain_relay_queue(rows)
            if _audit_only(rows):
                # Only the audit log waits for these (in one process tasks and replies are
                # handed over, not published): gather a few batches' worth into one produce
                # request instead of one per commit, which costs the broker and this process
                # CPU on the workflows' path. Records that someone waits for end the wait.
                self._urgent.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(AUDIT_GATHER_S):
                        await self._urgent.wait()
                self._drain_relay_queue(rows)
            while True:
                try:
                    await kafka.publish(self.producer, [(m.topic, m.key, m.value, m.headers) for _, m in rows])
                    break
                except Exception as exc:  # noqa: BLE001 - any produce failure: retry the whole batch
                    await self.backoffs[RELAY].wait(exc)
            self.backoffs[RELAY].recovered()
            published = rows[-1][0]
            # Published rows are deleted at most every OUTBOX_CLEANUP_S under load, and as
            # soon as the relay falls idle: a crash in between publishes them again, which
            # consumers take as the duplicates they already expect.
            if time.monotonic() - last_cleanup >= OUTBOX_CLEANUP_S:
                await self._delete_outbox(published)
                published, last_cleanup = None, time.monotonic()

    def _drain_relay_queue(self, rows: list[OutboxRow]) -> None:
        while not self.relay_queue.empty():
            rows.extend(self.relay_queue.get_nowait())

    async def _delete_outbox(self, up_to: int) -> None:
        while True:
            try:
                await self.store.delete_outbox(self.shard_id, up_to, legacy=self._legacy_outbox)
                self._legacy_outbox = False
                self.backoffs[RELAY].recovered()
                return
            except (asyncpg.PostgresError, *outage.DATABASE_TRANSIENT) as exc:
                await self.backoffs[RELAY].wait(exc)

    # ---- re-dispatch of tasks no worker started ----------------------------------------

    async def _redispatch_loop(self) -> None:
        backoff = self.backoffs[REDISPATCH]
        while True:
            await asyncio.sleep(REDISPATCH_AFTER_MS / 2000)
            while True:
                try:
                    if backoff.retrying:
                        # PostgreSQL is back: another process may own the shard by now.
                        await self.verify_owner()
                    await self.redispatch()
                except outage.TRANSIENT as exc:
                    if not outage.is_transient(exc):
                        raise
                    await backoff.wait(exc)
                    continue
                except asyncpg.PostgresError as exc:
                    # Not an outage, but the scan is best effort: the next one may do better.
                    log.error("shard %d: re-dispatch scan failed (%r)", self.shard_id, exc)  # noqa: TRY400
                backoff.recovered()
                break

    async def redispatch(self, *, force: bool = False) -> int:
        """Publish again the tasks that were scheduled long ago and never started.

        A task can be lost after the outbox published it (a development broker
        restarted, a poller vanished between matching and the started record).
        Matching collapses duplicates by task id; history ignores stale answers.
        """
        now = int(time.time() * 1000)
        rows: list[OutboxRow] = []
        alive: dict[str, int] = {}
        for run_id, since in list(self.unstarted.items()):
            if not force and now - since < REDISPATCH_AFTER_MS:
                continue
            state = await self.load(run_id)
            if state is None:
                continue
            t = Transition(state, now, self.shard_id)
            for task_id, since, dispatch in _unstarted(t):
                age = now - since
                due = self._redispatched.get(task_id, REDISPATCH_AFTER_MS)
                if force or age >= due:
                    dispatch()
                    due = min(due * 2, REDISPATCH_MAX_MS) if not force else due
                alive[task_id] = due
            rows.extend((0, m) for m in t.outbox)
        self._redispatched = alive
        if rows:
            await kafka.publish(self.producer, [(m.topic, m.key, m.value, m.headers) for _, m in rows])
        return len(rows)


_START = "StartWorkflowExecution"


def _is_start(value: bytes | None) -> bool:
    """Whether a command is a start, from its single-object header alone."""
    if value is None:
        return False
    try:
        return avro.schemas().name_of(value) == _START
    except avro.DecodeError:
        return False  # dead-lettered when the batch runs


def _nothing() -> None:
    pass


def _relay_outcome(to: asyncio.Future[Any], acked: asyncio.Future[Any]) -> None:
    """Hand the broker's settled answer to a future of the shard's own (whose wait may time out)."""
    if not to.done():
        to.set_result(acked)


def _audit_only(rows: list[OutboxRow]) -> bool:
    return all(m.topic == kafka.HISTORY for _, m in rows)


def _oldest_unstarted(s: MutableState) -> int:
    times = [a["scheduled_time"] for a in s.activities.values() if a["state"] == "Scheduled"]
    if s.wt is not None and not s.wt["started_event_id"]:
        times.append(s.wt["scheduled_time"])
    return min(times, default=0)


def _unstarted(t: Transition) -> list[tuple[str, int, Callable[[], None]]]:
    s = t.state
    out: list[tuple[str, int, Callable[[], None]]] = []
    if not s.running:
        return out
    if s.wt is not None and not s.wt["started_event_id"]:
        out.append((f"{s.run_id}:wt:{s.wt['scheduled_event_id']}", s.wt["scheduled_time"], t.dispatch_workflow_task))
    for sid, act in s.activities.items():
        if act["state"] == "Scheduled" and act["scheduled_time"] <= t.now:
            def dispatch(sid: int = int(sid)) -> None:
                t.dispatch_activity_task(sid)
            out.append((f"{s.run_id}:act:{sid}:{act['attempt']}", act["scheduled_time"], dispatch))
    return out


def _size(item: Any) -> int:
    return len(item) if isinstance(item, list) else 1


class TimerQueue:
    """The shard's due timers: an in-memory heap over the next window of timer rows."""

    def __init__(self, shard: Shard) -> None:
        self.shard = shard
        self.heap: list[tuple[int, str]] = []
        self.rows: dict[str, engine.TimerFiring] = {}
        self.inflight: set[str] = set()
        self.horizon = 0
        self.wake = asyncio.Event()

    def _add(self, firing: engine.TimerFiring) -> None:
        if firing.key in self.inflight:
            return
        self.rows[firing.key] = firing
        heapq.heappush(self.heap, (firing.fire_at, firing.key))
        self.wake.set()

    def committed(self, mutations: list[Mutation], deleted: list[str]) -> None:
        for key in deleted:
            self.inflight.discard(key)
            self.rows.pop(key, None)
        for m in mutations:
            for key in m.timers_delete:
                self.inflight.discard(key)
                self.rows.pop(key, None)
            if m.delete_all_timers:
                prefix = m.state.run_id + "/"
                for key in [k for k in self.rows if k.startswith(prefix)]:
                    del self.rows[key]
                self.inflight = {k for k in self.inflight if not k.startswith(prefix)}
            for key, fire_at, ns, wid, run_id, kind, ref, attempt in m.timers_upsert:
                self.inflight.discard(key)
                if fire_at <= self.horizon:
                    self._add(engine.TimerFiring(key, fire_at, ns, wid, run_id, kind, ref, attempt))

    async def _reload(self, now: int) -> None:
        self.horizon = now + TIMER_WINDOW_MS
        for r in await self.shard.store.timers_before(self.shard.shard_id, self.horizon):
            firing = engine.TimerFiring(r["timer_key"], int(r["fire_at"]), r["namespace"], r["workflow_id"],
                                        r["run_id"], r["kind"], int(r["ref"]), int(r["attempt"]))
            known = self.rows.get(firing.key)
            if known is None or known.fire_at != firing.fire_at:
                self._add(firing)

    async def run(self) -> None:
        next_reload = 0
        while True:
            # Milliseconds with their fraction: rounding the clock down to whole ones made every
            # timer wait up to a millisecond more, on top of the event loop's own rounding.
            now = time.time() * 1000
            if now >= next_reload:
                try:
                    await self._reload(int(now))
                except outage.DATABASE_TRANSIENT as exc:
                    await self.shard.backoffs[TIMERS].wait(exc)
                    continue
                self.shard.backoffs[TIMERS].recovered()
                next_reload = int(now) + TIMER_WINDOW_MS // 2
            while self.heap and self.heap[0][0] <= now:
                fire_at, key = heapq.heappop(self.heap)
                firing = self.rows.get(key)
                if firing is None or firing.fire_at != fire_at:
                    continue  # deleted or re-armed since it was queued
                del self.rows[key]
                self.inflight.add(key)
                await self.shard.inbox.put(firing)
            until = min(next_reload, self.heap[0][0] if self.heap else next_reload)
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), max(0.0, until / 1000 - time.time()))
