"""A shard's re-dispatch: publish again the tasks scheduled long ago that no worker started.

A task can be lost after it left history: the outbox published it and a development
broker restarted, a poller vanished between matching and the started record, or matching
in this process held a task handed over (docs/colocation.md) when the process died.
Re-dispatch is the recovery of all of these: it keeps the runs with a task no worker has
started (:attr:`Redispatcher.unstarted`, fed by every commit), and every
REDISPATCH_AFTER_MS / 2 publishes again the tasks due: a task first REDISPATCH_AFTER_MS
after it was scheduled, then after twice the wait before, up to REDISPATCH_MAX_MS between
two. (The wait was once compared with the task's age, which passes the cap for good: every
task unstarted for 5 minutes, a queue no worker polls, went out again on every pass.)
Matching collapses duplicates by task id; history ignores stale answers.

A task handed over to matching in this process (docs/colocation.md) and still waiting in
its memory for a poll is not lost, and is not published again (``held``): in a burst of
thousands of runs that wait longer than REDISPATCH_AFTER_MS for a worker, every copy was
built, produced, fetched back by matching and dropped there as a duplicate. Its wait goes
on as if it had been sent, so it is looked at again at its next due time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence

import asyncpg
from aiokafka import AIOKafkaProducer

from kadence_protocol.enums import ActivityState
from services.common import kafka, outage

from . import run_trace
from .builder import Mutation, Transition
from .state import MutableState
from .store import OutboxRow

log = logging.getLogger(__name__)

REDISPATCH_AFTER_MS = 10_000
REDISPATCH_MAX_MS = 300_000


class Redispatcher:
    def __init__(self, shard_id: int, producer: AIOKafkaProducer,
                 load: Callable[[str], Awaitable[MutableState | None]], backoff: outage.Backoff,
                 verify_owner: Callable[[], Awaitable[None]],
                 held: Callable[[str], bool] = lambda task_id: False) -> None:
        """``held``: whether a task (by id) waits in the memory of matching in this process."""
        self.shard_id = shard_id
        self._held = held
        self.producer = producer
        self._load = load
        self.backoff = backoff
        self._verify_owner = verify_owner
        # Runs with a task no worker has started, and since when: re-dispatch looks only
        # at these instead of scanning the shard's executions.
        self.unstarted: dict[str, int] = {}
        # Per task id re-dispatched: when it is due again (ms) and the wait after that.
        self._due: dict[str, tuple[int, int]] = {}

    def recover(self, states: Iterable[MutableState]) -> None:
        """On acquisition: the runs the store marks undispatched."""
        self.unstarted = {s.run_id: oldest_unstarted(s) for s in states}

    def watch(self, run_id: str, since: int) -> None:
        """A run with a task unstarted since ``since`` (ms)."""
        self.unstarted[run_id] = since

    def committed(self, mutations: Sequence[Mutation]) -> None:
        for m in mutations:
            if m.state.running and m.state.has_undispatched():
                self.unstarted[m.state.run_id] = oldest_unstarted(m.state)
            else:
                self.unstarted.pop(m.state.run_id, None)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(REDISPATCH_AFTER_MS / 2000)
            while True:
                try:
                    if self.backoff.retrying:
                        # PostgreSQL is back: another process may own the shard by now.
                        await self._verify_owner()
                    await self.redispatch()
                except outage.TRANSIENT as exc:
                    if not outage.is_transient(exc):
                        raise
                    await self.backoff.wait(exc)
                    continue
                except asyncpg.PostgresError as exc:
                    # Not an outage, but the scan is best effort: the next one may do better.
                    log.error("shard %d: re-dispatch scan failed (%r)", self.shard_id, exc)  # noqa: TRY400
                self.backoff.recovered()
                break

    async def redispatch(self, *, force: bool = False) -> int:
        """Publish again the tasks that were scheduled long ago and never started (``force``:
        every unstarted task, now); return how many records went out."""
        now = int(time.time() * 1000)
        rows: list[OutboxRow] = []
        alive: dict[str, tuple[int, int]] = {}
        for run_id, since in list(self.unstarted.items()):
            if not force and now - since < REDISPATCH_AFTER_MS:
                continue
            state = await self._load(run_id)
            if state is None:
                continue
            t: Transition | None = None
            for task_id, since, dispatch in _unstarted(state, now):
                due, wait = self._due.get(task_id, (since + REDISPATCH_AFTER_MS, REDISPATCH_AFTER_MS))
                if force or now >= due:
                    if force or not self._held(task_id):
                        if t is None:
                            # Rebuilt from the state alone: in the run's trace (run_trace.py).
                            t = Transition(state, now, self.shard_id,
                                           headers=run_trace.headers_of(state.trace_context))
                        dispatch(t)
                    wait = wait if force else min(wait * 2, REDISPATCH_MAX_MS)
                    due = now + wait
                alive[task_id] = (due, wait)
            if t is not None:
                rows.extend((0, m) for m in t.outbox)
        self._due = alive
        if rows:
            await kafka.publish(self.producer, [m for _, m in rows])
        return len(rows)


def oldest_unstarted(s: MutableState) -> int:
    times = [a.scheduled_time for a in s.activities.values() if a.state == ActivityState.SCHEDULED]
    if s.wt is not None and not s.wt.started_event_id:
        times.append(s.wt.scheduled_time)
    return min(times, default=0)


def _unstarted(s: MutableState, now: int) -> list[tuple[str, int, Callable[[Transition], None]]]:
    """The run's unstarted tasks: (task id, scheduled time, what dispatches it again)."""
    out: list[tuple[str, int, Callable[[Transition], None]]] = []
    if not s.running:
        return out
    if s.wt is not None and not s.wt.started_event_id:
        # The id the task was dispatched under (builder.py): the attempt is part of it.
        out.append((f"{s.run_id}:wt:{s.wt.scheduled_event_id}:{s.wt.attempt}", s.wt.scheduled_time,
                     Transition.dispatch_workflow_task))
    for sid, act in s.activities.items():
        if act.state == ActivityState.SCHEDULED and act.scheduled_time <= now:
            def dispatch(t: Transition, sid: int = int(sid)) -> None:
                t.dispatch_activity_task(sid)
            out.append((f"{s.run_id}:act:{sid}:{act.attempt}", act.scheduled_time, dispatch))
    return out
