"""The scheduler: fires the schedules of the shards this history process owns.

A schedule belongs to the shard of its key (namespace/schedule_id, like a workflow), fixed
when it is created. Every round (``KADENCE_SCHEDULER_INTERVAL_MS``), for the owned shards,
it reads the schedules with something to do (a nominal time due, a trigger, a buffered
firing) and for each:

1. decides every firing due (services/common/schedules.py: catch-up window, overlap policy
   against the status of the schedule's latest workflow in current_executions);
2. produces their commands to kadence.requests and waits for the broker's acknowledgement:
   a start with the deterministic workflow id ``{schedule_id}-{nominal time}`` (or, for a
   cron start's schedule, a new run of its one workflow id) and request id, for
   terminate_other a terminate of the previous workflow, for cancel_other a cancel request
   of it (the firing then waits in the buffer until that run closes);
3. then advances the schedule's row in PostgreSQL (next time, buffer, triggers taken,
   recent firings), only while the shard's range_id is still the one acquired.

A crash between 2 and 3 fires the same nominal times again: history applies a start whose
request id it has seen once, and a firing whose workflow already exists is taken as done
(its id is deterministic). Nothing is decided on state outside PostgreSQL, so a schedule
survives restarts of every service; downtime is caught up within the catch-up window.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from kadence_protocol import avro
from services.common.kafka import REQUESTS, enqueue_keyed, workflow_key
from services.common.outcome import RUNNING
from services.common.schedules import (
    RECENT_KEPT,
    OverlapPolicy,
    ScheduleAction,
    ScheduleError,
    ScheduleSpec,
    due_times,
    iso_ms,
    iso_utc,
)
from services.common.telemetry import metrics

log = logging.getLogger(__name__)

PRODUCE_TIMEOUT_S = 15.0
UNAPPLIED_GRACE_MS = 60_000

_DUE = """
SELECT * FROM schedules
WHERE shard_id = ANY($1::int[])
  AND ((NOT paused AND (next_fire_at <= $2 OR buffered IS NOT NULL)) OR cardinality(triggers) > 0)
ORDER BY next_fire_at
LIMIT 1000
"""

# The next time is the round's to move only if no pause or unpause came meanwhile (an unpause
# written over caught up the paused time); what the round did (triggers taken, runs started)
# is recorded either way. A schedule deleted and made again meanwhile is another one: untouched.
_ADVANCE = """
UPDATE schedules SET
    next_nominal = CASE WHEN paused = $13 AND next_nominal IS NOT DISTINCT FROM $14 THEN $3 ELSE next_nominal END,
    next_fire_at = CASE WHEN paused = $13 AND next_nominal IS NOT DISTINCT FROM $14 THEN $4 ELSE next_fire_at END,
    buffered = $5, triggers = triggers[$6 + 1:], last_workflow_id = $7, recent = $8::jsonb,
    fired = fired + $9, skipped = skipped + $10, updated_at = now()
WHERE namespace = $1 AND schedule_id = $2 AND created_at = $15
  AND EXISTS (SELECT 1 FROM shards WHERE shard_id = $11 AND range_id = $12)
"""


@dataclass
class _Round:
    """What one schedule's turn decided."""

    commands: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    recent: list[dict[str, Any]] = field(default_factory=list)
    started: int = 0
    skipped: int = 0
    buffered: int | None = None


class Scheduler:
    """Fires due schedules of the shards ``owned()`` returns (shard id -> range_id)."""

    def __init__(self, pool: asyncpg.Pool, producer: AIOKafkaProducer, owned: Callable[[], Mapping[int, int]], *,
                 clock: Callable[[], float] = time.time) -> None:
        self._pool = pool
        self._producer = producer
        self._owned = owned
        self._clock = clock
        self.rounds = 0  # rounds done (tests wait on it)
        # Per shard, the time of the previous round that owned it: a firing due since then
        # is fired on time, whatever the catch-up window (schedules.due_times).
        self._looked: dict[int, int] = {}

    async def round(self) -> int:
        """One pass; the number of workflows started."""
        self.rounds += 1
        owned = dict(self._owned())
        now = int(self._clock() * 1000)
        looked, self._looked = self._looked, dict.fromkeys(owned, now)
        if not owned:
            return 0
        started = 0
        for row in await self._pool.fetch(_DUE, list(owned), now):
            shard_id = row["shard_id"]
            if shard_id not in owned:
                continue
            try:
                started += await self._fire(row, shard_id, owned[shard_id], now, looked.get(shard_id))
            except (ScheduleError, ValueError, KeyError, TypeError):
                # One unreadable row must not hold up the others.
                log.exception("schedule %s/%s cannot be fired", row["namespace"], row["schedule_id"])
        return started

    async def _status(self, namespace: str, workflow_id: str | None) -> str | None:
        if not workflow_id:
            return None
        value = await self._pool.fetchval(
            "SELECT status FROM current_executions WHERE namespace = $1 AND workflow_id = $2", namespace, workflow_id)
        return None if value is None else str(value)

    async def _is_open(self, ns: str, last: str | None, recent: list[dict[str, Any]], now: int) -> bool:
        """Whether the schedule's latest workflow still runs. One produced but not applied yet
        (history behind) counts as running for a while, so a lagging history does not let the
        next firing overlap it; past ``UNAPPLIED_GRACE_MS`` it is taken as never started (its
        start refused) and no longer holds the schedule."""
        status = await self._status(ns, last)
        if status is not None or last is None:
            return status == RUNNING
        started = [a for a in recent if a.get("workflow_id") == last and a.get("result") == "started"]
        if not started:
            return False
        return now - iso_ms(str(started[-1]["scheduled_time"])) < UNAPPLIED_GRACE_MS

    async def _fire(self, row: asyncpg.Record, shard_id: int, range_id: int, now: int,
                    looked: int | None = None) -> int:
        ns, sid = row["namespace"], row["schedule_id"]
        spec = ScheduleSpec.stored(json.loads(row["spec"]))
        if spec.cannot_fire is not None:
            return await self._retire(row, spec.cannot_fire, shard_id, range_id, now)
        action = ScheduleAction.from_json(json.loads(row["action"]))
        overlap = OverlapPolicy(row["overlap"])
        firings: list[tuple[int, str]] = []
        turn = _Round()
        if row["buffered"] is not None:
            if row["paused"]:
                turn.buffered = int(row["buffered"])  # kept for after the pause
            else:
                firings.append((int(row["buffered"]), "buffered"))
        next_nominal: int | None = row["next_nominal"]
        missed = 0
        if not row["paused"] and next_nominal is not None and row["next_fire_at"] <= now:
            due, missed, next_nominal = due_times(spec, sid, next_nominal, now, int(row["catchup_window_ms"]),
                                                  on_time_after=looked)
            firings += [(t, "scheduled") for t in due]
        triggers = list(row["triggers"])
        firings += [(int(t), "triggered") for t in triggers]

        last: str | None = row["last_workflow_id"]
        is_open = await self._is_open(ns, last, json.loads(row["recent"]), now)
        for nominal, how in firings:
            wid = action.workflow_id_of(sid, nominal)
            if action.workflow_id is None:
                if wid == last:
                    continue
                status = await self._status(ns, wid)
                if status is not None:  # started by a round that stopped before advancing the row
                    last, is_open = wid, status == RUNNING
                    continue
            # With one workflow id for every firing (a cron start), a firing produced again after
            # a round that stopped before advancing the row is answered by history's request ledger.
            # A trigger is an operator's "run it now": it starts whatever the policy. But one
            # workflow id has one open run: while it runs, a trigger (or allow_all) could not
            # start another; produced anyway, history refused it into the DLQ, counted started.
            if is_open and action.workflow_id is not None and (how == "triggered"
                                                                or overlap is OverlapPolicy.ALLOW_ALL):
                turn.skipped += 1
                turn.recent.append({"scheduled_time": iso_utc(nominal), "workflow_id": None,
                                    "result": "skipped", "how": how})
                continue
            if is_open and how != "triggered" and overlap is not OverlapPolicy.ALLOW_ALL:
                if overlap is OverlapPolicy.SKIP or (overlap.holds and turn.buffered is not None):
                    turn.skipped += 1
                    turn.recent.append({"scheduled_time": iso_utc(nominal), "workflow_id": None,
                                        "result": "skipped", "how": how})
                    continue
                if overlap.holds:
                    # cancel_other asks once, when the firing is first held (a crash before the
                    # row advances asks again, deduplicated by the request id).
                    if overlap is OverlapPolicy.CANCEL_OTHER and how != "buffered":
                        assert last is not None
                        turn.commands.append(("RequestCancelWorkflowExecution", {
                            "namespace": ns, "workflow_id": last, "run_id": None,
                            "reason": f"schedule {sid}: overlap policy cancel_other, firing {iso_utc(nominal)}",
                            "request_id": f"schedule:{ns}:{sid}:{nominal}:cancel", "identity": f"schedule {sid}",
                            "reply_to": None}))
                        turn.recent.append({"scheduled_time": iso_utc(nominal), "workflow_id": last,
                                            "result": "cancel_requested", "how": how})
                    turn.buffered = nominal
                    continue
                assert last is not None  # TERMINATE_OTHER with a run open
                turn.commands.append(("TerminateWorkflowExecution", {
                    "namespace": ns, "workflow_id": last, "run_id": None,
                    "reason": f"schedule {sid}: overlap policy terminate_other, firing {iso_utc(nominal)}",
                    "request_id": f"schedule:{ns}:{sid}:{nominal}:terminate", "identity": f"schedule {sid}",
                    "reply_to": None}))
            turn.commands.append(("StartWorkflowExecution", action.start_record(ns, sid, nominal)))
            turn.started += 1
            turn.recent.append({"scheduled_time": iso_utc(nominal), "workflow_id": wid, "result": "started",
                                "how": how})
            last, is_open = wid, True

        if not turn.commands and not turn.recent and not missed and not triggers and last == row["last_workflow_id"] \
                and turn.buffered == row["buffered"] and next_nominal == row["next_nominal"]:
            return 0  # a buffered firing still waiting: nothing to write
        await self._produce(turn.commands)
        next_fire_at = None if next_nominal is None else next_nominal + spec.jitter(sid, next_nominal)
        recent = (json.loads(row["recent"]) + turn.recent)[-RECENT_KEPT:]
        status = await self._pool.execute(
            _ADVANCE, ns, sid, next_nominal, next_fire_at, turn.buffered, len(triggers), last,
            json.dumps(recent), turn.started, turn.skipped + missed, shard_id, range_id,
            row["paused"], row["next_nominal"], row["created_at"])
        if status.endswith(" 0"):
            log.info("schedule %s/%s: not advanced (deleted, or made again, meanwhile, or shard %d changed"
                     " owner)", ns, sid, shard_id)
        m = metrics()
        if m is not None:
            for result, n in (("started", turn.started), ("skipped", turn.skipped), ("missed", missed),
                              ("buffered", int(turn.buffered is not None))):
                if n:
                    m.schedule_actions.add(n, {"kadence.result": result})
        return turn.started

    async def _retire(self, row: asyncpg.Record, why: str, shard_id: int, range_id: int, now: int) -> int:
        """A schedule that no longer fires (ScheduleSpec.cannot_fire): its next time, buffered
        firing and triggers are dropped, each firing and trigger recorded as skipped, so the row
        is no longer due and is not read again each round. Nothing is started."""
        ns, sid = row["namespace"], row["schedule_id"]
        log.warning("schedule %s/%s no longer fires: %s", ns, sid, why)
        due = row["next_nominal"] is not None and row["next_fire_at"] <= now and not row["paused"]
        dropped = [(int(row["next_nominal"]), "scheduled")] if due else []
        dropped += [(int(row["buffered"]), "buffered")] if row["buffered"] is not None else []
        dropped += [(int(t), "triggered") for t in row["triggers"]]
        recent = json.loads(row["recent"]) + [{"scheduled_time": iso_utc(int(t)), "workflow_id": None,
                                               "result": "skipped", "how": how} for t, how in dropped]
        await self._pool.execute(
            _ADVANCE, ns, sid, None, None, None, len(row["triggers"]), row["last_workflow_id"],
            json.dumps(recent[-RECENT_KEPT:]), 0, len(dropped), shard_id, range_id,
            row["paused"], row["next_nominal"], row["created_at"])
        m = metrics()
        if m is not None and dropped:
            m.schedule_actions.add(len(dropped), {"kadence.result": "skipped"})
        return 0

    async def _produce(self, commands: list[tuple[str, dict[str, Any]]]) -> None:
        """Queue every command (in order, per workflow partition) and wait for the broker's answers."""
        futures = []
        async with asyncio.timeout(PRODUCE_TIMEOUT_S):
            for name, record in commands:
                key = workflow_key(record["namespace"], record["workflow_id"])
                _, future = await enqueue_keyed(self._producer, REQUESTS, key, avro.encode(name, record))
                futures.append(future)
            await asyncio.gather(*futures)
