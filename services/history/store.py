"""PostgreSQL persistence of the history service: one transaction per shard batch.

Every write transaction first touches the shard row with the owner's range_id:
a paused or partitioned old owner (a zombie) finds no row and fails with
ShardOwnershipLost instead of writing over the new owner's state.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import asyncpg
import orjson

from kadence_protocol import avro
from services.common import kafka
from services.common.outcome import close_payload

from .builder import Mutation, OutboxMessage, history_records
from .errors import ShardOwnershipLost, WorkflowNotNew
from .ledger import RequestSeen
from .snapshot import upgrade
from .state import MutableState, rebuild
from .summary import summary

# (outbox id, message): the messages of one batch share its id (one outbox_batches row).
OutboxRow = tuple[int, OutboxMessage]


def _with_current_run(namespaces: str, workflow_ids: str) -> str:
    """FROM items: each (namespace, workflow_id) of the two text[] parameters named, joined
    to its current run (``c.run_id``); those with none drop out.

    One primary-key probe per key. As a plain join, a prepared statement may keep a plan
    made while the table was small (a scan of it all): 1.5 ms instead of 0.15 ms per look-up
    once it held 20,000 runs. LIMIT keeps the subquery from being merged into such a join.
    """
    return (f"unnest({namespaces}::text[], {workflow_ids}::text[]) AS k (namespace, workflow_id)"
            " CROSS JOIN LATERAL (SELECT run_id FROM current_executions"
            "   WHERE namespace = k.namespace AND workflow_id = k.workflow_id LIMIT 1) AS c")


_CURRENT_RUNS = f"SELECT k.namespace, k.workflow_id, c.run_id FROM {_with_current_run('$1', '$2')}"

# One batch in one statement, its own transaction: kadence_commit_v2 (migration 0017) returns 2 if
# a workflow the batch ran as new has a run after all, 3 if a request id the batch applied is
# in request_ids already (see ledger.py), both checked before anything is written; 1 when the
# fence finds our range_id stale (nothing written); else 0, with every table written: the
# fence, the batch's rows, its outbox row, request ids and run start offsets.
# The outbox row holds the batch's messages except its audit records (kadence.history), which
# it names by (run id, event id) for pending_outbox to rebuild from history_events: the
# function takes those names from the batch's events (0017), and their trace headers only
# when some event has any.
_COMMIT = "SELECT kadence_commit_v2(" + ", ".join(f"${i}" for i in range(1, 28)) + ")"

# The audit records a recovered outbox row names, in its order: each event's stored encoding
# and its run's namespace and workflow id (the HistoryRecord's other fields).
_AUDIT_RECORDS = ("SELECT x.namespace, x.workflow_id, r.run, h.data, r.headers"
                  " FROM unnest($1::text[], $2::bigint[], $3::bytea[]) WITH ORDINALITY AS r (run, event_id, headers, n)"
                  " JOIN history_events h ON h.run_id = r.run AND h.event_id = r.event_id"
                  " JOIN executions x ON x.run_id = r.run ORDER BY r.n")


class HistoryStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def acquire_shard(self, shard_id: int, owner: str) -> tuple[int, int]:
        """Take ownership: bump range_id; return (range_id, next offset to consume)."""
        row = await self.pool.fetchrow(
            "INSERT INTO shards (shard_id, range_id, owner) VALUES ($1, 1, $2)"
            " ON CONFLICT (shard_id) DO UPDATE SET range_id = shards.range_id + 1, owner = $2, updated_at = now()"
            " RETURNING range_id, kafka_offset",
            shard_id, owner,
        )
        assert row is not None
        return int(row["range_id"]), int(row["kafka_offset"])

    async def applied_requests(self, keys: Sequence[tuple[str, str, str]]) -> dict[tuple[str, str, str], str]:
        """Of (namespace, workflow id, request id) ``keys``, those applied: the run of each."""
        rows = await self.pool.fetch(
            "SELECT q.namespace, q.workflow_id, q.request_id, q.run_id"
            " FROM unnest($1::text[], $2::text[], $3::text[]) AS r (ns, wf, id)"
            " JOIN request_ids q ON q.namespace = r.ns AND q.workflow_id = r.wf AND q.request_id = r.id",
            [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys])
        return {(r["namespace"], r["workflow_id"], r["request_id"]): str(r["run_id"]) for r in rows}

    async def trim_request_ids(self, shard_id: int, older_than_s: float) -> None:
        await self.pool.execute(
            "DELETE FROM request_ids WHERE shard_id = $1 AND applied_at < now() - make_interval(secs => $2)",
            shard_id, float(older_than_s))

    async def run_start_offset(self, namespace: str, workflow_id: str) -> tuple[str, int] | None:
        """(run id, start offset) of the workflow's current run, as recorded."""
        row = await self.pool.fetchrow("SELECT run_id, kafka_offset FROM run_start_offsets"
                                       " WHERE namespace = $1 AND workflow_id = $2", namespace, workflow_id)
        return None if row is None else (str(row["run_id"]), int(row["kafka_offset"]))

    async def replay_until(self, shard_id: int) -> int:
        value = await self.pool.fetchval("SELECT replay_until FROM shards WHERE shard_id = $1", shard_id)
        return 0 if value is None else int(value)

    async def rewind(self, shard_id: int, range_id: int, *, fresh: bool) -> int:
        """Restart the shard's consumption at offset 0, fenced; return ``replay_until``.

        ``fresh``: the broker is new (its offsets restart at 0 and name other records than
        the stored ones), so nothing read is a copy of what was applied, and the old
        broker's run start offsets go. Otherwise (an operator's rewind of a broker that
        lost data) records below the stored offset are read again as copies (replay_until).
        """
        async with self.pool.acquire() as conn, conn.transaction():
            value = await conn.fetchval(
                "UPDATE shards SET replay_until = CASE WHEN $3 THEN 0 ELSE greatest(replay_until, kafka_offset) END,"
                " kafka_offset = 0 WHERE shard_id = $1 AND range_id = $2 RETURNING replay_until",
                shard_id, range_id, fresh)
            if value is None:
                raise ShardOwnershipLost(f"shard {shard_id} has a new owner (our range_id {range_id} is stale)")
            if fresh:
                await conn.execute("DELETE FROM run_start_offsets WHERE shard_id = $1", shard_id)
            return int(value)

    async def committed_offset(self, shard_id: int, range_id: int) -> int:
        """The next offset the shard's last commit recorded, if ``range_id`` still owns it."""
        value = await self.pool.fetchval("SELECT kafka_offset FROM shards WHERE shard_id = $1 AND range_id = $2",
                                         shard_id, range_id)
        if value is None:
            raise ShardOwnershipLost(f"shard {shard_id} has a new owner (our range_id {range_id} is stale)")
        return int(value)

    async def shard_range_id(self, shard_id: int) -> int | None:
        """The shard's current range_id (its owner's fence), None if never acquired."""
        value = await self.pool.fetchval("SELECT range_id FROM shards WHERE shard_id = $1", shard_id)
        return None if value is None else int(value)

    async def current_run(self, namespace: str, workflow_id: str) -> str | None:
        value = await self.pool.fetchval(
            "SELECT run_id FROM current_executions WHERE namespace = $1 AND workflow_id = $2", namespace, workflow_id)
        return None if value is None else str(value)

    async def current_runs(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """The current run of each (namespace, workflow_id) that has one, in one round trip."""
        rows = await self.pool.fetch(_CURRENT_RUNS, [k[0] for k in keys], [k[1] for k in keys])
        return {(r["namespace"], r["workflow_id"]): str(r["run_id"]) for r in rows}

    async def load_state(self, run_id: str) -> MutableState | None:
        data = await self.pool.fetchval("SELECT state FROM executions WHERE run_id = $1", run_id)
        if data is None:
            return None
        snapshot = upgrade(orjson.loads(data))
        if not MutableState.predates(snapshot):
            return MutableState.from_snapshot(snapshot)
        # Written by an earlier build, without fields the fold now keeps (taking their
        # defaults would not be what the fold gives): the run's history says what they are.
        rows = await self.pool.fetch("SELECT data FROM history_events WHERE run_id = $1 ORDER BY event_id", run_id)
        return rebuild(snapshot["namespace"], snapshot["workflow_id"], run_id,
                       (avro.decode(r["data"])[1] for r in rows), (len(r["data"]) for r in rows))

    async def event_rows(self, run_id: str) -> list[bytes]:
        """A run's committed events as written (HistoryEvent encodings), in order (reset.py)."""
        rows = await self.pool.fetch("SELECT data FROM history_events WHERE run_id = $1 ORDER BY event_id", run_id)
        return [bytes(r["data"]) for r in rows]

    async def pending_outbox(self, shard_id: int) -> list[OutboxRow]:
        """What was committed and not yet published, in publication order.

        Rows of the one-message-per-row table of before migration 0004 are first moved into
        ``outbox_batches``, one batch each under its own id (ids are dense per shard across
        both tables), so the relay knows one table only."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "WITH old AS (DELETE FROM outbox WHERE shard_id = $1 RETURNING *)"
                " INSERT INTO outbox_batches SELECT shard_id, id, ARRAY[topic], ARRAY[key], ARRAY[value],"
                " ARRAY[headers] FROM old", shard_id)
            batches = await conn.fetch("SELECT id, topics, keys, payloads, headers, audit_runs, audit_events,"
                                       " audit_headers FROM outbox_batches WHERE shard_id = $1 ORDER BY id", shard_id)
            audit = {int(b["id"]): await conn.fetch(_AUDIT_RECORDS, b["audit_runs"], b["audit_events"],
                                                    b["audit_headers"])
                     for b in batches if b["audit_runs"]}
        rows: list[OutboxRow] = []
        for b in batches:
            batch_id = int(b["id"])
            # The batch's audit records first (each run's in event order), then what it stored.
            # An event whose run retention has deleted since is gone and not published.
            for r in audit.get(batch_id, ()):
                rows.extend((batch_id, m) for m in history_records(r["namespace"], r["workflow_id"], r["run"],
                                                                   [bytes(r["data"])], _headers_from(r["headers"])))
            rows.extend((batch_id, OutboxMessage(topic, key, value, _headers_from(headers)))
                        for topic, key, value, headers in zip(b["topics"], b["keys"], b["payloads"], b["headers"],
                                                              strict=True))
        return rows

    async def next_outbox_id(self, shard_id: int) -> int:
        # After pending_outbox, which empties the table of before migration 0004.
        value = await self.pool.fetchval("SELECT max(id) FROM outbox_batches WHERE shard_id = $1", shard_id)
        return 1 if value is None else int(value) + 1

    async def delete_outbox(self, shard_id: int, up_to: int, range_id: int) -> None:
        """Delete what is published, up to outbox id ``up_to``, without waiting for the WAL
        flush: a delete a crash loses only has its rows published again (the relay's
        at-least-once rule), and its own flush would hold the shard's next commit behind it.
        One simple-protocol query, so that SET LOCAL covers the DELETE's transaction alone.

        Fenced by ``range_id`` as every write of a shard: a former owner waking from a pause
        deletes nothing. A new owner numbers its rows after those it found, but one that found
        none starts again at 1, so after two hand-overs a stale delete could take rows not
        yet published. (Rows committed after this statement's snapshot are not seen by it.)"""
        s = int(shard_id)
        await self.pool.execute(
            "SET LOCAL synchronous_commit = off;"
            f" DELETE FROM outbox_batches WHERE shard_id = {s} AND id <= {int(up_to)}"
            f" AND EXISTS (SELECT 1 FROM shards WHERE shard_id = {s} AND range_id = {int(range_id)})")

    async def timers_before(self, shard_id: int, until: int) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self.pool.fetch(
            "SELECT timer_key, fire_at, namespace, workflow_id, run_id, kind, ref, attempt FROM timers"
            " WHERE shard_id = $1 AND fire_at <= $2 ORDER BY fire_at LIMIT 10000", shard_id, until)
        return rows

    async def undispatched(self, shard_id: int) -> list[MutableState]:
        rows = await self.pool.fetch("SELECT state FROM executions WHERE shard_id = $1 AND undispatched", shard_id)
        return [MutableState.loads(r["state"]) for r in rows]

    async def commit(
        self,
        shard_id: int,
        range_id: int,
        offset: int | None,
        mutations: Sequence[Mutation],
        outbox: Sequence[OutboxRow],
        timer_deletes: Sequence[str],
        heartbeats: Sequence[tuple[str, int, int, str | None, int]],
        closed: Sequence[tuple[str, dict[str, Any]]] = (),
        new_workflows: Collection[tuple[str, str]] = (),
        requests: Mapping[tuple[str, str, str], str] | None = None,
        run_starts: Mapping[tuple[str, str], tuple[str, int]] | None = None,
    ) -> None:
        """Write one batch, fenced by ``range_id``, in one statement (one round trip).

        ``_COMMIT`` first checks that none of ``new_workflows`` (namespace, workflow id) has
        a run (else raises WorkflowNotNew), then writes the batch, fenced; nothing is
        written unless all of it is. ``requests`` (namespace, workflow id, request id) ->
        run id: request ids applied, none of which may be recorded yet (else RequestSeen);
        ``run_starts`` (namespace, workflow id) -> (run id, start offset): runs started.
        """
        requests = requests or {}
        run_starts = run_starts or {}
        executions = []
        current: dict[tuple[str, str], tuple[Any, ...]] = {}
        events: list[tuple[str, int, bytes]] = []
        deletes = list(timer_deletes)
        closed_runs = []
        upserts: list[tuple[Any, ...]] = []
        for m in mutations:
            s = m.state
            executions.append((s.namespace, s.workflow_id, s.run_id, shard_id, s.workflow_type, s.task_queue,
                               s.status, s.start_time, s.close_time, s.next_event_id, s.dumps(), s.has_undispatched(),
                               summary(s)))
            if m.current_changed:
                current[(s.namespace, s.workflow_id)] = (s.namespace, s.workflow_id, s.run_id, shard_id, s.status,
                                                         s.start_request_id)
            events.extend((s.run_id, e["event_id"], data) for e, data in zip(m.events, m.encoded_events, strict=True))
            deletes.extend(m.timers_delete)
            if m.delete_all_timers:
                closed_runs.append(s.run_id)
            upserts.extend((shard_id, *row) for row in m.timers_upsert)
        if closed_runs:
            # The run's every timer goes by run id: its keys one by one would be index probes
            # for rows that delete removes anyway (a closing batch names five or more).
            gone = set(closed_runs)
            deletes = [k for k in deletes if k.partition("/")[0] not in gone]
        # The audit records are named, not stored (migration 0016): each mutation's are its events,
        # named by the function from ``events`` (0017); their headers go only when some have any
        # (an array of one NULL per event costs an element each to encode).
        messages = [m for _, m in outbox if m.topic != kafka.HISTORY]
        audit_headers: list[bytes | None] | None = None
        if any(m.headers for m in mutations if m.events):
            audit_headers = [_headers_to(m.headers) for m in mutations for _ in m.events]
        outcome = await self.pool.fetchval(
            _COMMIT,
            shard_id, range_id, offset, executions, list(current.values()), events,
            outbox[0][0] if outbox else None, [m.topic for m in messages], [m.key for m in messages],
            [m.value for m in messages], [_headers_to(m.headers) for m in messages],
            deletes, closed_runs, upserts, list(heartbeats),
            [close_payload(run_id, answer) for run_id, answer in closed],
            [ns for ns, _ in new_workflows], [wf for _, wf in new_workflows],
            [k[0] for k in requests], [k[1] for k in requests], [k[2] for k in requests], list(requests.values()),
            [k[0] for k in run_starts], [k[1] for k in run_starts], [v[0] for v in run_starts.values()],
            [v[1] for v in run_starts.values()], audit_headers)
        if outcome == 3:
            raise RequestSeen("a request id the batch applied was applied before")
        if outcome == 1:
            raise ShardOwnershipLost(f"shard {shard_id} has a new owner (our range_id {range_id} is stale)")
        if outcome == 2:
            raise WorkflowNotNew("a workflow the batch ran as new has a run")


def _headers_to(headers: tuple[tuple[str, bytes], ...]) -> bytes | None:
    if not headers:
        return None
    return json.dumps([[k, v.hex()] for k, v in headers]).encode()


def _headers_from(data: bytes | None) -> tuple[tuple[str, bytes], ...]:
    if not data:
        return ()
    return tuple((k, bytes.fromhex(v)) for k, v in json.loads(data))
