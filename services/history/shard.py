"""One history shard (= one kadence.requests partition) owned by this process.

:class:`Shard` is the composition root of the shard's units, each a module of its own:

- intake.py: the one owner of the offsets taken (records fetched, commands handed over,
  due timers), batch by batch in offset order;
- runner.py: the batch runner (look-up, run, commit with the consumed offset, retry,
  poison handling with poison.py) and what follows a commit;
- cache.py: the run cache (mutable states, current runs, tails);
- relay.py: the outbox relay, publishing after commit;
- timers.py: the timer queue; redispatch.py: re-dispatch of tasks no worker started;
- ledger.py: request ids applied and runs' start offsets.

Each unit's fields are its own; the shard builds them from a :class:`ShardConfig`, starts
their loops under one guard (an outage is healed inside a loop; anything else stops the
shard loudly), and answers for them to the service (health, hand-over, fetch gate). An
observer (observer.py; traces and metrics in telemetry.py) is injected into the units.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from kadence_protocol import records
from services.common import outage, validation
from services.common.colocation import OutboxReplies, OutboxTasks, ReplySink, TaskSink
from services.common.ingress_auth import IngressPolicy
from services.common.reply_notices import Notices

from . import cancellation, engine, reset, updates
from .cache import RunCache
from .children import apply_parent_close_policy, notify_child_outcome, signal_external, start_child
from .errors import ShardOwnershipLost
from .health import ShardHealth, ShardState
from .intake import Intake
from .ledger import Ledger, trim_loop
from .limits import DEFAULT_HISTORY_LIMITS, HistoryLimits
from .memory import Heartbeats, Tails
from .neighbours import HandedCommand
from .notices import NO_NOTICES, CommitNotices
from .observer import NO_OBSERVER, ShardObserver
from .redispatch import Redispatcher
from .relay import OutboxRelay
from .requests import typed
from .runner import Admission, BatchRunner
from .state import MutableState
from .store import HistoryStore
from .timer_ahead import timer_ran_ahead
from .timers import TimerQueue

log = logging.getLogger(__name__)

# The shard's loops, each run under _guard, each with its own outage backoff.
LOOP, RELAY, TIMERS, REDISPATCH, TRIM = LOOPS = ("loop", "relay", "timers", "redispatch", "trim")
# A batch under way this long is reported blocked (health.py); stalled after KADENCE_STALL_AFTER_MS.
BLOCKED_AFTER_S = 1.0

Handler = Callable[[engine.Context, dict[str, Any]], Awaitable[None]]

HANDLERS: dict[str, Handler] = {
    "StartWorkflowExecution": typed(records.StartWorkflowExecution.from_dict, engine.start_workflow),
    "SignalWithStartWorkflowExecution": typed(records.SignalWithStartWorkflowExecution.from_dict,
                                              engine.signal_with_start),
    "SignalWorkflowExecution": typed(records.SignalWorkflowExecution.from_dict, engine.signal_workflow),
    "TerminateWorkflowExecution": typed(records.TerminateWorkflowExecution.from_dict, engine.terminate_workflow),
    "RecordWorkflowTaskStarted": typed(records.RecordWorkflowTaskStarted.from_dict, engine.workflow_task_started),
    "RespondWorkflowTaskCompleted": typed(records.RespondWorkflowTaskCompleted.from_dict,
                                          engine.workflow_task_completed),
    "RespondWorkflowTaskFailed": typed(records.RespondWorkflowTaskFailed.from_dict, engine.workflow_task_failed),
    "RecordActivityTaskStarted": typed(records.RecordActivityTaskStarted.from_dict, engine.activity_started),
    "RespondActivityTaskCompleted": typed(records.RespondActivityTaskCompleted.from_dict, engine.activity_completed),
    "RespondActivityTaskFailed": typed(records.RespondActivityTaskFailed.from_dict, engine.activity_failed),
    "RecordActivityTaskHeartbeat": typed(records.RecordActivityTaskHeartbeat.from_dict, engine.activity_heartbeat),
    "RequestCancelWorkflowExecution": typed(records.RequestCancelWorkflowExecution.from_dict,
                                            cancellation.request_cancel_workflow),
    "RespondActivityTaskCanceled": typed(records.RespondActivityTaskCanceled.from_dict,
                                         cancellation.activity_canceled),
    "UpdateWorkflowExecution": typed(records.UpdateWorkflowExecution.from_dict, updates.request_update),
    "StartChildWorkflowExecution": typed(records.StartChildWorkflowExecution.from_dict, start_child),
    "SignalExternalWorkflowExecution": typed(records.SignalExternalWorkflowExecution.from_dict, signal_external),
    "ChildWorkflowNotice": typed(records.ChildWorkflowNotice.from_dict, notify_child_outcome),
    "ApplyParentClosePolicy": typed(records.ApplyParentClosePolicy.from_dict, apply_parent_close_policy),
    "ResetWorkflowExecution": reset.reset_workflow,
    "RespondTimerRunAhead": typed(records.RespondTimerRunAhead.from_dict, timer_ran_ahead),
}


@dataclass(frozen=True)
class ShardConfig:
    """How the service wants its shards: the co-location ports and the checks and bounds
    from its settings. The defaults are a shard on its own (every hop through the broker)."""

    tasks: TaskSink = field(default_factory=OutboxTasks)  # where committed tasks go
    replies: ReplySink = field(default_factory=OutboxReplies)  # where replies and closes go
    notices: Notices = NO_NOTICES  # told of what the relay published (replies, own commands, visibility)
    at_commit: CommitNotices = NO_NOTICES  # told of committed tasks and replies, for services elsewhere
    ingress: IngressPolicy | None = None  # who may send commands to which namespace; None: anyone
    limits: validation.Limits = validation.DEFAULT_LIMITS  # what a command may hold
    history_limits: HistoryLimits = DEFAULT_HISTORY_LIMITS  # how long a run's history may grow
    # How long past its fire time a user timer a worker runs ahead is held (timer_ahead.py).
    timer_ahead_grace_ms: int = 0
    # Whether a namespace is registered, by a read of the names started at the loop time given
    # or later (namespaces.py); None: not checked.
    namespace_registered: Callable[[str, float], Awaitable[bool]] | None = None
    # kadence.requests' partition count: a record on another shard's partition is refused
    # (routing.py); 0: not checked.
    partitions: int = 0
    request_id_retention_s: float = 86_400.0
    tail_run_bytes: int = 1 << 20  # memory.py Tails budgets
    tail_shard_bytes: int = 64 << 20
    # Told when a loop died of something other than an outage or lost ownership: the
    # service restarts the shard or stops the process.
    on_failure: Callable[[Shard, BaseException], None] | None = None
    observer: Callable[[], ShardObserver] = lambda: NO_OBSERVER  # one per shard


class Shard:
    def __init__(self, shard_id: int, store: HistoryStore, producer: AIOKafkaProducer, owner: str,
                 config: ShardConfig | None = None) -> None:
        config = config or ShardConfig()
        self.shard_id = shard_id
        self.store = store
        self.producer = producer
        self.owner = owner
        self.config = config
        self.tasks, self.replies = config.tasks, config.replies
        self.history_limits = config.history_limits
        self.range_id = 0
        self.next_offset = 0
        self.lost = asyncio.Event()
        # Set when a loop died of something other than an outage or lost ownership.
        self.failure: BaseException | None = None
        self.stopped_at: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # Outages each loop waits out (see outage.py), read by the health report.
        self.backoffs = {name: outage.Backoff(f"shard {shard_id} {name}", log) for name in LOOPS}
        self.observer = config.observer()
        self.intake = Intake()
        self.cache = RunCache(store, shard_id, Tails(config.tail_run_bytes, config.tail_shard_bytes))
        self.heartbeats = Heartbeats()
        self.ledger = Ledger(shard_id)  # request ids applied and runs' start offsets
        self.relay = OutboxRelay(shard_id, store, producer, self.backoffs[RELAY], config.notices,
                                 config.at_commit)
        self.timers = TimerQueue(shard_id, store, self.intake.fire, self.backoffs[TIMERS],
                                 offer=self.intake.fire_nowait)
        self.redispatcher = Redispatcher(shard_id, producer, self.cache.load, self.backoffs[REDISPATCH],
                                         self.verify_owner, held=config.tasks.holds)
        self.runner = BatchRunner(
            self, store=store, producer=producer, intake=self.intake, cache=self.cache, relay=self.relay,
            timers=self.timers, redispatcher=self.redispatcher, ledger=self.ledger, heartbeats=self.heartbeats,
            tasks=config.tasks, replies=config.replies, backoff=self.backoffs[LOOP], observer=self.observer,
            admission=Admission(HANDLERS, config.limits, config.history_limits, config.ingress,
                                config.namespace_registered, config.partitions))
        self.observer.bind(shard_id, backlog=lambda: self.relay.backlog, run_of=self._cached_current)

    # ---- what the batch context reads (context.py) -------------------------------------

    @property
    def current(self) -> dict[tuple[str, str], str]:
        return self.cache.current

    @property
    def tails(self) -> Tails:
        return self.cache.tails

    async def load(self, run_id: str) -> MutableState | None:
        return await self.cache.load(run_id)

    def remember(self, state: MutableState, *, current: bool = False) -> None:
        self.cache.remember(state, current=current)

    def _cached_current(self, key: tuple[str, str]) -> MutableState | None:
        run_id = self.cache.current.get(key)
        return self.cache.runs.get(run_id) if run_id is not None else None

    # ---- what the service and the fetch gate read ---------------------------------------

    @property
    def consumed(self) -> int:
        """The next offset the shard takes (intake.py)."""
        return self.intake.consumed

    @property
    def fetched_at(self) -> float:
        return self.intake.fetched_at

    @property
    def last_progress(self) -> float:
        return self.runner.last_progress

    # ---- lifecycle -------------------------------------------------------------------

    async def acquire(self) -> int:
        """Take the shard over; return the offset to consume from."""
        self.range_id, self.next_offset = await self.store.acquire_shard(self.shard_id, self.owner)
        self.runner.fence(self.range_id)
        self.relay.range_id = self.range_id
        self.redispatcher.recover(await self.store.undispatched(self.shard_id))
        pending = await self.relay.recover()
        log.info("shard %d acquired (range_id %d, offset %d, %d outbox rows pending)",
                 self.shard_id, self.range_id, self.next_offset, pending)
        self.observer.acquired(self.next_offset)
        return self.next_offset

    def start_at(self, offset: int, *, replay_until: int = 0, skip_to: Callable[[int], None] | None = None,
                 fetch_needed: Callable[[], None] | None = None) -> None:
        """Consume from ``offset``: records below ``replay_until`` were read before a rewind
        (ledger.py); ``skip_to`` moves the consumer past records taken by hand-over, and
        ``fetch_needed`` asks for a fetch the hand-over could not spare (gate.py)."""
        self.ledger.resume(replay_until)
        self.intake.start_at(offset, skip_to=skip_to, fetch_needed=fetch_needed)
        self.observer.acquired(offset)

    def start(self) -> None:
        loops = dict(zip(LOOPS, (self.runner.run(), self.relay.run(), self.timers.run(), self.redispatcher.run(),
                                 trim_loop(self.store, self.shard_id, self.config.request_id_retention_s)),
                         strict=True))
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
            self.intake.drain()
            return
        except Exception as exc:
            log.critical("shard %d: its %s loop died; the shard stops", self.shard_id, name, exc_info=exc)
            failure = exc
        else:
            failure = RuntimeError(f"the {name} loop returned")  # they never do
            log.critical("shard %d: %s; the shard stops", self.shard_id, failure)
        if self.failure is None:
            self.failure, self.stopped_at = failure, time.time()
            self.intake.drain()
            if self.config.on_failure is not None:
                self.config.on_failure(self, failure)

    @property
    def stopped(self) -> bool:
        """The shard takes no more work: ownership lost, or a loop died."""
        return self.lost.is_set() or self.failure is not None

    def health(self, lag: int | None = None) -> ShardHealth:
        last_progress = self.runner.last_progress
        if self.stopped:
            error = repr(self.failure) if self.failure is not None else "shard ownership lost"
            return ShardHealth(self.shard_id, ShardState.STOPPED, self.stopped_at, error, last_progress, lag)
        failing = [(b.since or 0.0, name, b) for name, b in self.backoffs.items() if b.retrying]
        if not failing:
            busy = self.runner.busy_since
            if busy is not None and time.time() - busy >= BLOCKED_AFTER_S:
                return ShardHealth(self.shard_id, ShardState.BLOCKED, busy, "a batch has not finished since then",
                                   last_progress, lag, (LOOP,))
            return ShardHealth(self.shard_id, ShardState.RUNNING, None, None, last_progress, lag)
        since, _, first = min(failing, key=lambda f: f[0])
        return ShardHealth(self.shard_id, ShardState.RETRYING, since, first.last_error, last_progress, lag,
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
        self.intake.drain()
        self.observer.stopped()

    # ---- what comes in (intake.py) -----------------------------------------------------

    async def feed(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        await self.intake.feed(records)

    def offer(self, command: HandedCommand) -> None:
        self.intake.offer(command)

    def offer_early(self, command: HandedCommand, acked: asyncio.Future[Any]) -> None:
        self.intake.offer_early(command, acked)

    def queued(self, key: bytes) -> None:
        self.intake.queued(key)

    def answered(self, key: bytes, offset: int | None) -> None:
        self.intake.answered(key, offset)

    def settled(self) -> bool:
        """The loop waits for work and none is queued."""
        return self.intake.settled()

    async def redispatch(self, *, force: bool = False) -> int:
        """Publish again the tasks scheduled long ago and never started (redispatch.py)."""
        return await self.redispatcher.redispatch(force=force)
