"""The audit's PostgreSQL side: compare replayed runs with the system of record, seed
runs that a time-bounded read joined mid-history, and rebuild a database from the topic."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar

import asyncpg

from services.common import db
from services.common.outcome import RUNNING
from services.history.state import MutableState
from services.history.summary import summary

from .errors import AuditError
from .replay import MISSING_ON_TOPIC, Divergence, Replay, RunKey, compare_run

_T = TypeVar("_T")
_CHUNK = 1000  # run ids per query: bounded statements on a large history


def _chunks(items: Sequence[_T]) -> Iterator[Sequence[_T]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


async def seed_partial_runs(conn: asyncpg.Connection, replay: Replay) -> int:
    """Runs whose first events were before the read started: fold their earlier events
    from history_events, so the topic's part is checked on top of them. Returns how many."""
    partial = [a for a in replay.runs.values() if 1 not in a.events and a.pending]
    for audit in partial:
        rows = await conn.fetch("SELECT data FROM history_events WHERE run_id = $1 AND event_id < $2"
                                " ORDER BY event_id", audit.run.run_id, min(audit.pending))
        replay.seed(audit.run, (bytes(r["data"]) for r in rows))
    return len(partial)


async def compare(conn: asyncpg.Connection, replay: Replay, *, whole_topic: bool) -> list[Divergence]:
    """Every replayed run against its rows; with ``whole_topic`` (the read began at the
    beginning) also the runs PostgreSQL has that the topic never mentioned."""
    found: list[Divergence] = []
    run_ids = sorted(replay.runs)
    retention = await _retention(conn)
    now_ms = int(time.time() * 1000)
    for chunk in _chunks(run_ids):
        events: dict[str, list[bytes]] = {}
        for row in await conn.fetch("SELECT run_id, data FROM history_events WHERE run_id = ANY($1::text[])"
                                    " ORDER BY run_id, event_id", list(chunk)):
            events.setdefault(row["run_id"], []).append(bytes(row["data"]))
        states = {row["run_id"]: bytes(row["state"]) for row in await conn.fetch(
            "SELECT run_id, state FROM executions WHERE run_id = ANY($1::text[])", list(chunk))}
        for run_id in chunk:
            if run_id not in events and run_id not in states and _expired(replay.runs[run_id].state, retention,
                                                                           now_ms):
                continue  # deleted by the retention job (services/history/retention.py), as it should be
            found.extend(compare_run(replay.runs[run_id], events.get(run_id, []), states.get(run_id)))
    if whole_topic:
        rows = await conn.fetch("SELECT namespace, workflow_id, run_id FROM executions"
                                " WHERE NOT (run_id = ANY($1::text[])) ORDER BY namespace, workflow_id", run_ids)
        found.extend(Divergence(RunKey(r["namespace"], r["workflow_id"], r["run_id"]), MISSING_ON_TOPIC,
                                "in executions but no event of it was published") for r in rows)
    return found


async def _retention(conn: asyncpg.Connection) -> Mapping[str, int]:
    """Each namespace's retention in ms (none before migration 0011)."""
    if not await conn.fetchval("SELECT to_regclass('namespaces') IS NOT NULL"):
        return {}
    return {r["name"]: int(r["retention_ms"]) for r in await conn.fetch("SELECT name, retention_ms FROM namespaces")}


def _expired(state: MutableState, retention: Mapping[str, int], now_ms: int) -> bool:
    """A closed run older than its namespace's retention: PostgreSQL no longer keeps it."""
    keep = retention.get(state.namespace)
    return (keep is not None and state.status not in ("", RUNNING) and state.close_time is not None
            and state.close_time < now_ms - keep)


async def rebuild_into(dsn: str, replay: Replay) -> dict[str, int]:
    """Write executions, history_events and current_executions for every run whose fold
    held into an empty database (migrated first). Returns the row counts written.

    Only what the topic determines is written: timers, outbox, shard offsets and the
    matching backlog are the live services' working state and start empty.
    """
    await db.migrate(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        for table in ("executions", "history_events", "current_executions"):
            if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table})"):
                raise AuditError(f"will not rebuild into a database whose {table} is not empty")
        good = [a for a in replay.runs.values() if not a.fold_broken and 1 in a.events and not a.pending]
        executions: list[tuple[Any, ...]] = []
        events: list[tuple[str, int, bytes]] = []
        for audit in good:
            s = audit.state
            executions.append((s.namespace, s.workflow_id, s.run_id, replay.partition[s.run_id], s.workflow_type,
                               s.task_queue, s.status, s.start_time, s.close_time, s.next_event_id, s.dumps(),
                               s.has_undispatched(), summary(s)))
            # The bytes as written, whatever their schema version: their hashes were made from them.
            events.extend((s.run_id, i, audit.encoding(i)) for i in sorted(audit.events))
        by_run = {a.run.run_id: a for a in good}
        current = [(ns, wid, run_id, replay.partition[run_id], by_run[run_id].state.status,
                    by_run[run_id].state.start_request_id)
                   for (ns, wid), run_id in replay.current.items() if run_id in by_run]
        async with conn.transaction():
            await conn.copy_records_to_table(
                "executions", records=executions,
                columns=["namespace", "workflow_id", "run_id", "shard_id", "workflow_type", "task_queue", "status",
                         "start_time", "close_time", "next_event_id", "state", "undispatched", "summary"])
            await conn.copy_records_to_table("history_events", records=events,
                                             columns=["run_id", "event_id", "data"])
            await conn.copy_records_to_table(
                "current_executions", records=current,
                columns=["namespace", "workflow_id", "run_id", "shard_id", "status", "start_request_id"])
    finally:
        await conn.close()
    return {"executions": len(executions), "history_events": len(events), "current_executions": len(current)}
